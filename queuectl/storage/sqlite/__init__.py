"""The default store: one SQLite file. ``store`` is the async store, ``schema`` opens files safely."""
