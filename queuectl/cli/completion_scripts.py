"""The text of the completion scripts ``queuectl completion`` prints, one template per shell.

The scripts walk the command line being completed: the command path typed so far, the options
that take a value, ``--`` and the arguments, then offer subcommands, options, values (files,
choices), command names (``run``) or job ids, which they ask of ``queuectl completion --job-ids``.
What they know of the commands is in four tables (``subs``, ``opts``, ``args``, ``kinds``) that
``completion.script`` fills in from the click commands, as ``case`` (``switch`` in fish)
branches: each template has ``%(...)s`` slots for them, so a literal ``%`` is written ``%%``.
"""

from __future__ import annotations

__all__ = ("BASH", "FISH", "SH_TABLES", "ZSH")

#: The four tables as shell functions, shared by bash and zsh (``%(tables)s`` in their scripts).
SH_TABLES = """\
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

#: bash's script: the tables, then ``_queuectl``, registered with ``complete -F``.
BASH = """\
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

#: zsh's script: the tables, then ``_queuectl``, registered with ``compdef``.
ZSH = """\
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

#: fish's script, tables included, as fish functions: ``__queuectl_complete`` lists the words.
FISH = """\
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
