"""The dashboard: a Starlette app over the ``Queue`` façade, served by uvicorn.

Needs the ``web`` extra (``pip install 'queuectl[web]'``). Nothing outside this package imports
it at module level: ``queuectl dashboard`` and ``worker start --dashboard`` import it when they
run, so every other command starts as fast as before and works without the extra.

The parts, one job each: ``app`` (the factory), ``security`` (token, origin and Host checks),
``data`` (what pages and API read, in the CLI's JSON shapes), ``api`` (JSON routes), ``live``
(following a job's output), ``pages`` (HTML), ``metrics`` (Prometheus), ``chart`` (the SVG
chart), ``responses`` (errors as HTTP), ``server`` (uvicorn on the caller's event loop).
"""
