"""``completion bash|zsh|fish``: the shell's completion script for queuectl.

The commands, their options and the values of options with choices are written into the script
when it is made, from the click commands themselves (into the templates of ``completion_scripts``):
completing them starts no process. Job ids come from the store: the script calls
``queuectl [--db TARGET] completion --job-ids PREFIX``, one short process per Tab where an id goes
(an index range scan, at most ``MAX_IDS`` ids; the newest jobs for an empty prefix).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from queuectl.cli import completion_scripts as scripts
from queuectl.cli.run import examples

if TYPE_CHECKING:
    from queuectl.queue import Queue

SHELLS = ("bash", "zsh", "fish")
#: The most job ids one Tab lists.
MAX_IDS = 200


class Spec:
    """One command as the completion script sees it: ``path`` as typed (``dlq retry``), its
    subcommands, its options, what each option takes, and what its arguments are."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.subcommands: list[str] = []
        self.options: list[str] = []
        self.values: dict[str, str] = {}  # option -> "any", "file" or "choice WORD..." (flags: absent)
        self.arguments = ""  # "ids", "file", "command" or ""


def command_specs(ctx: click.Context) -> list[Spec]:
    """Every command of ``queuectl``, the group first, from the loaded click commands."""
    root = ctx.find_root()
    return list(_walk(root, root.command, ""))


def _walk(ctx: click.Context, command: click.Command, path: str) -> Iterator[Spec]:
    spec = Spec(path)
    for param in command.params:
        if isinstance(param, click.Option):
            if param.hidden:
                continue
            names = [*param.opts, *param.secondary_opts]
            spec.options += names
            if not (param.is_flag or param.count):
                for name in names:
                    spec.values[name] = _value_kind(param)
        elif isinstance(param, click.Argument):
            spec.arguments = _argument_kind(param, path)
    spec.options += list(ctx.help_option_names)
    subs: list[tuple[str, click.Command]] = []
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                spec.subcommands.append(name)
                subs.append((name, sub))
    yield spec
    for name, sub in subs:
        sub_ctx = click.Context(sub, info_name=name, parent=ctx)
        yield from _walk(sub_ctx, sub, f"{path} {name}".strip())


def _value_kind(param: click.Option) -> str:
    if isinstance(param.type, click.Choice):
        return "choice " + " ".join(str(choice) for choice in param.type.choices)
    if isinstance(param.type, click.Path) or param.name in ("db", "cwd", "path"):
        return "file"
    return "any"


def _argument_kind(param: click.Argument, path: str) -> str:
    name = param.name or ""
    if "job_id" in name:
        return "ids"
    if isinstance(param.type, click.Path) or name == "path":
        return "file"
    if isinstance(param.type, click.Choice):
        return "choice " + " ".join(str(choice) for choice in param.type.choices)
    if path == "run":
        return "command"
    return ""


# --- the scripts (their text: ``completion_scripts``) ---------------------------------------


def _cases(specs: list[Spec], body: str, *, fish: bool = False) -> str:
    """A ``case`` (``switch`` in fish) on the command path, one branch per command with a value."""
    lines = []
    for spec in specs:
        value = getattr(spec, body)
        text = " ".join(value) if isinstance(value, list) else value
        if not text:
            continue
        if fish:
            lines.append(f"        case '{spec.path}'\n            echo '{text}'")
        else:
            lines.append(f"        '{spec.path}') echo '{text}' ;;")
    return "\n".join(lines)


def _kind_cases(specs: list[Spec], *, fish: bool = False) -> str:
    lines = []
    for spec in specs:
        for option, kind in spec.values.items():
            key = f"{spec.path}|{option}"
            if fish:
                lines.append(f"        case '{key}'\n            echo '{kind}'")
            else:
                lines.append(f"        '{key}') echo '{kind}' ;;")
    return "\n".join(lines)


def script(shell: str, specs: list[Spec]) -> str:
    """The completion script of ``shell`` for the commands ``specs``."""
    fish = shell == "fish"
    tables = {
        "subs": _cases(specs, "subcommands", fish=fish),
        "opts": _cases(specs, "options", fish=fish),
        "args": _cases(specs, "arguments", fish=fish),
        "kinds": _kind_cases(specs, fish=fish),
    }
    if fish:
        return scripts.FISH % tables
    template = scripts.BASH if shell == "bash" else scripts.ZSH
    return template % {"tables": scripts.SH_TABLES % tables}


@click.command(
    "completion",
    short_help="Print a shell's completion script.",
    epilog=examples(
        """eval "$(queuectl completion bash)"      # in ~/.bashrc""",
        """eval "$(queuectl completion zsh)"       # in ~/.zshrc, after compinit""",
        "queuectl completion fish > ~/.config/fish/completions/queuectl.fish",
    ),
)
@click.argument("shell", type=click.Choice(SHELLS), required=False)
@click.option("--job-ids", "prefix", metavar="PREFIX", hidden=True, help="List job ids (for the scripts).")
@click.pass_context
def completion(ctx: click.Context, shell: str | None, prefix: str | None) -> None:
    """Print the shell's completion script: commands, options, and job ids.

    Job ids are read from the store (the one of --db or $QUEUECTL_DB, as on
    the command line being completed) when Tab is pressed where an id goes.
    """
    if prefix is not None:
        if shell is not None:
            raise click.UsageError("give a shell or --job-ids, not both")
        _print_ids(prefix)
        return
    if shell is None:
        raise click.UsageError(f"give the shell: {', '.join(SHELLS)}")
    click.echo(script(shell, command_specs(ctx)), nl=False)


def _print_ids(prefix: str) -> None:
    """Up to ``MAX_IDS`` ids that start with ``prefix`` (the newest jobs for none)."""
    from queuectl.cli.run import store_exists, with_queue

    if not store_exists():
        return  # completing must not create a store

    async def ids(queue: Queue) -> list[str]:
        if prefix:
            return await queue.store.ids_with_prefix(prefix, limit=MAX_IDS)
        return [job.id for job in await queue.list_jobs(limit=MAX_IDS)]

    found = with_queue(ids)
    if found:
        click.echo("\n".join(found))
