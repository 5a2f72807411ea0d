"""``completion bash|zsh|fish``: the shell's completion script for queuectl.

The commands, their options and the values of options with choices are written into the script
when it is made, from the click commands themselves: completing them starts no process. Job ids
come from the store: the script calls ``queuectl [--db TARGET] completion --job-ids PREFIX``,
one short process per Tab where an id goes (an index range scan, at most ``MAX_IDS`` ids;
the newest jobs for an empty prefix).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

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


# --- the scripts ----------------------------------------------------------------------------


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


_SH_TABLES = """\
__queuectl_subs() {
    case "$1" in
%(subs)s
    esac
}
__queuectl_opts() {
    case "$1" in
%(opts)s
    esac
}
__queuectl_args() {
    case "$1" in
%(args)s
    esac
}
# What option $2 of command $1 takes: any, file, "choice WORD...", or nothing for a flag.
__queuectl_kind() {
    case "$1|${2%%%%=*}" in
%(kinds)s
    esac
}
"""

_BASH = """\
# bash completion for queuectl: commands, options, and job ids from the store.
# Load it from ~/.bashrc:  eval "$(queuectl completion bash)"
%(tables)s
__queuectl_reply() {
    COMPREPLY=()
    local line
    while IFS= read -r line; do COMPREPLY+=("$line"); done
}
__queuectl_value() {
    case "$1" in
        file) __queuectl_reply < <(compgen -f -- "$2") ;;
        choice*) __queuectl_reply < <(compgen -W "${1#choice }" -- "$2") ;;
    esac
}
_queuectl() {
    local cur="${COMP_WORDS[COMP_CWORD]}" cmdpath="" word kind i=1 args=0 dashdash=0
    local -a db=()
    COMPREPLY=()
    while (( i < COMP_CWORD )); do
        word="${COMP_WORDS[i]}"
        if (( ! dashdash )) && [[ "$word" == -- ]]; then
            dashdash=1
        elif (( ! dashdash )) && [[ "$word" == -* ]]; then
            kind="$(__queuectl_kind "$cmdpath" "$word")"
            if [[ -n "$kind" && "$word" != *=* ]]; then
                if (( i + 1 == COMP_CWORD )); then
                    __queuectl_value "$kind" "$cur"
                    return
                fi
                (( ++i ))
                [[ -z "$cmdpath" && "$word" == --db ]] && db=(--db "${COMP_WORDS[i]}")
            fi
        elif (( ! args )) && [[ " $(__queuectl_subs "$cmdpath") " == *" $word "* ]]; then
            cmdpath="${cmdpath:+$cmdpath }$word"
        else
            (( ++args ))
        fi
        (( ++i ))
    done
    if (( ! dashdash )) && [[ "$cur" == -* ]] && ! [[ "$cmdpath" == run && $args -gt 0 ]]; then
        __queuectl_reply < <(compgen -W "$(__queuectl_opts "$cmdpath")" -- "$cur")
        return
    fi
    local subs
    subs="$(__queuectl_subs "$cmdpath")"
    if [[ -n "$subs" ]]; then
        __queuectl_reply < <(compgen -W "$subs" -- "$cur")
        return
    fi
    case "$(__queuectl_args "$cmdpath")" in
        ids) __queuectl_reply < <(command queuectl "${db[@]}" completion --job-ids "$cur" 2>/dev/null) ;;
        file | choice*) __queuectl_value "$(__queuectl_args "$cmdpath")" "$cur" ;;
        command) (( args )) || __queuectl_reply < <(compgen -c -- "$cur" | sort -u) ;;
    esac
}
complete -o default -F _queuectl queuectl
"""

_ZSH = """\
#compdef queuectl
# zsh completion for queuectl: commands, options, and job ids from the store.
# Load it from ~/.zshrc, after compinit:  eval "$(queuectl completion zsh)"
%(tables)s
__queuectl_value() {
    case "$1" in
        file) _files ;;
        choice*) compadd -- ${(s: :)${1#choice }} ;;
    esac
}
_queuectl() {
    local cur="${words[CURRENT]}" cmdpath="" word kind subs
    local -i i=2 args=0 dashdash=0
    local -a db
    while (( i < CURRENT )); do
        word="${words[i]}"
        if (( ! dashdash )) && [[ "$word" == -- ]]; then
            dashdash=1
        elif (( ! dashdash )) && [[ "$word" == -* ]]; then
            kind="$(__queuectl_kind "$cmdpath" "$word")"
            if [[ -n "$kind" && "$word" != *=* ]]; then
                if (( i + 1 == CURRENT )); then
                    __queuectl_value "$kind"
                    return
                fi
                (( ++i ))
                [[ -z "$cmdpath" && "$word" == --db ]] && db=(--db "${words[i]}")
            fi
        elif (( ! args )) && [[ " $(__queuectl_subs "$cmdpath") " == *" $word "* ]]; then
            cmdpath="${cmdpath:+$cmdpath }$word"
        else
            (( ++args ))
        fi
        (( ++i ))
    done
    if (( ! dashdash )) && [[ "$cur" == -* ]] && ! [[ "$cmdpath" == run && $args -gt 0 ]]; then
        compadd -- ${(s: :)"$(__queuectl_opts "$cmdpath")"}
        return
    fi
    subs="$(__queuectl_subs "$cmdpath")"
    if [[ -n "$subs" ]]; then
        compadd -- ${(s: :)subs}
        return
    fi
    case "$(__queuectl_args "$cmdpath")" in
        ids) compadd -- ${(f)"$(command queuectl $db completion --job-ids "$cur" 2>/dev/null)"} ;;
        file | choice*) __queuectl_value "$(__queuectl_args "$cmdpath")" ;;
        command) if (( args )); then _files; else _command_names -e; fi ;;
    esac
}
compdef _queuectl queuectl
"""

_FISH = """\
# fish completion for queuectl: commands, options, and job ids from the store.
# Load it:  queuectl completion fish | source
# or keep it:  queuectl completion fish > ~/.config/fish/completions/queuectl.fish
function __queuectl_subs
    switch $argv[1]
%(subs)s
    end
end
function __queuectl_opts
    switch $argv[1]
%(opts)s
    end
end
function __queuectl_args
    switch $argv[1]
%(args)s
    end
end
function __queuectl_kind
    switch "$argv[1]|"(string replace -r '=.*' '' -- $argv[2])
%(kinds)s
    end
end
function __queuectl_value
    switch $argv[1]
        case file
            __fish_complete_path $argv[2]
        case 'choice *'
            string split ' ' -- (string replace 'choice ' '' -- $argv[1])
    end
end
function __queuectl_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l cmdpath ''
    set -l db
    set -l args 0
    set -l dashdash 0
    set -l n (count $tokens)
    set -l i 2
    while test $i -le $n
        set -l word $tokens[$i]
        if test $dashdash = 0; and test "$word" = --
            set dashdash 1
        else if test $dashdash = 0; and string match -q -- '-*' $word
            set -l kind (__queuectl_kind "$cmdpath" $word)
            if test -n "$kind"; and not string match -q -- '*=*' $word
                if test $i -eq $n
                    __queuectl_value "$kind" "$cur"
                    return
                end
                set i (math $i + 1)
                if test -z "$cmdpath"; and test "$word" = --db
                    set db --db $tokens[$i]
                end
            end
        else if test $args = 0; and contains -- $word (string split ' ' -- (__queuectl_subs "$cmdpath"))
            set cmdpath (string trim -- "$cmdpath $word")
        else
            set args (math $args + 1)
        end
        set i (math $i + 1)
    end
    if test $dashdash = 0; and string match -q -- '-*' "$cur"; and not test "$cmdpath" = run -a $args -gt 0
        string split ' ' -- (__queuectl_opts "$cmdpath")
        return
    end
    set -l subs (__queuectl_subs "$cmdpath")
    if test -n "$subs"
        string split ' ' -- $subs
        return
    end
    switch (__queuectl_args "$cmdpath")
        case ids
            command queuectl $db completion --job-ids "$cur" 2>/dev/null
        case file 'choice *'
            __queuectl_value (__queuectl_args "$cmdpath") "$cur"
        case command
            if test $args = 0
                complete -C "$cur"
            else
                __fish_complete_path "$cur"
            end
    end
end
complete -c queuectl -f -a '(__queuectl_complete)'
"""


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
        return _FISH % tables
    template = _BASH if shell == "bash" else _ZSH
    return template % {"tables": _SH_TABLES % tables}


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
