"""Shell completion for bash and zsh, generated from evpnd's own argument parser (pure).

`evpnd completion bash` / `evpnd completion zsh` print a script; nothing is
written by hand, so a new command, option or choice completes as soon as the
parser has it. The FRR-style `show` aliases (evpnd/control/aliases.py) are
part of the tree too.

The script holds one table: each node of the command tree ("evpnd", "evpnd show",
"evpnd show routes", "evpnd show evpn mac vni *" where `*` stands for a typed value) with
its words (subcommands, choices of a positional), its options, and what each
option takes (its choices, a file, or any value). The shell function walks the
words typed so far down that tree and offers what the node has.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

from evpnd.control import aliases

FILE = "@file"  # the option takes a path
ANY = "@any"  # the option takes a value we cannot list
WILDCARD = "*"  # a node reached by any typed word (an alias's <vni>)
ROOT = "evpnd"  # the path of the top node (bash refuses an empty key)
# Options whose value is a path (the parsers name them so).
_PATH_DESTS = frozenset({"config", "socket", "svg", "file", "output"})
_SAFE = re.compile(r"[A-Za-z0-9 ._:/@*<>|=+-]*")


@dataclass
class Node:
    words: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # option -> FILE, ANY or choices


def tree(parser: argparse.ArgumentParser) -> dict[str, Node]:
    """Every node of the command tree, by its path of words."""
    nodes: dict[str, Node] = {}
    _walk(parser, ROOT, nodes)
    if f"{ROOT} show" in nodes:
        _add_aliases(nodes)
    return nodes


def _walk(parser: argparse.ArgumentParser, path: str, nodes: dict[str, Node]) -> None:
    node = nodes.setdefault(path, Node())
    for action in parser._actions:  # argparse has no public way to list them
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                node.words.append(name)
                _walk(sub, f"{path} {name}", nodes)
        elif action.option_strings:
            node.options.extend(action.option_strings)
            if action.nargs != 0:
                taken = _taken(action)
                for option in action.option_strings:
                    node.values[option] = taken
        elif action.choices:
            node.words.extend(str(c) for c in action.choices)


def _taken(action: argparse.Action) -> str:
    if action.choices:
        return " ".join(str(c) for c in action.choices)
    if action.dest in _PATH_DESTS:
        return FILE
    return ANY


def _add_aliases(nodes: dict[str, Node]) -> None:
    for alias in aliases.ALIASES:
        path = f"{ROOT} show"
        for word in alias.words:
            parent = nodes[path]
            if word in (aliases.VNI, aliases.TYPE):
                if word == aliases.TYPE:
                    _add_word(parent, *aliases.ROUTE_TYPE_NAMES)
                step = WILDCARD
            else:
                _add_word(parent, word)
                step = word
            path = f"{path} {step}"
            nodes.setdefault(path, Node())
        view = nodes.get(f"{ROOT} show {alias.view}")
        if view is not None:  # the options of the view the alias stands for
            end = nodes[path]
            _add_word(end)
            for option in view.options:
                if option not in end.options:
                    end.options.append(option)
            for option, taken in view.values.items():
                end.values.setdefault(option, taken)


def _add_word(node: Node, *words: str) -> None:
    for word in words:
        if word not in node.words:
            node.words.append(word)


# ---------------------------------------------------------------------------
# The scripts


def _quoted(text: str) -> str:
    if not _SAFE.fullmatch(text):
        raise ValueError(f"{text!r} cannot go into a completion script unquoted")
    return f'"{text}"'


def _tables(nodes: dict[str, Node], assign: str) -> list[str]:
    """The three tables as shell assignments; `assign` formats one (key, value) pair."""
    lines = ["_evpnd_words=("]
    lines += [assign.format(k=_quoted(p), v=_quoted(" ".join(n.words))) for p, n in nodes.items()]
    lines += [")", "_evpnd_opts=("]
    lines += [assign.format(k=_quoted(p), v=_quoted(" ".join(n.options)))
              for p, n in nodes.items()]  # fmt: skip
    lines += [")", "_evpnd_values=("]
    lines += [assign.format(k=_quoted(f"{p}|{o}"), v=_quoted(t))
              for p, n in nodes.items() for o, t in n.values.items()]  # fmt: skip
    lines.append(")")
    return lines


BASH = r"""
_evpnd() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local node=evpnd word child i skip=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ -n $skip ]]; then skip=""; continue; fi
        if [[ $word == -* ]]; then
            [[ -n ${_evpnd_values["$node|$word"]+x} ]] && skip=1
            continue
        fi
        child="$node $word"
        if [[ -n ${_evpnd_words["$child"]+x} ]]; then
            node=$child
        elif [[ -n ${_evpnd_words["$node *"]+x} ]]; then
            node="$node *"
        fi
    done
    COMPREPLY=()
    if ((COMP_CWORD > 1)) && [[ $prev == -* && -n ${_evpnd_values["$node|$prev"]+x} ]]; then
        case ${_evpnd_values["$node|$prev"]} in
            @file) COMPREPLY=($(compgen -f -- "$cur")) ;;
            @any) ;;
            *) COMPREPLY=($(compgen -W "${_evpnd_values["$node|$prev"]}" -- "$cur")) ;;
        esac
        return 0
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${_evpnd_opts["$node"]}" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "${_evpnd_words["$node"]}" -- "$cur"))
    fi
    return 0
}
complete -o default -F _evpnd evpnd
"""

ZSH = r"""
_evpnd() {
    local node=evpnd word child prev i skip=0
    for (( i = 2; i < CURRENT; i++ )); do
        word=${words[i]}
        if (( skip )); then skip=0; continue; fi
        if [[ $word == -* ]]; then
            (( ${+_evpnd_values[$node|$word]} )) && skip=1
            continue
        fi
        child="$node $word"
        if (( ${+_evpnd_words[$child]} )); then
            node=$child
        elif (( ${+_evpnd_words[$node *]} )); then
            node="$node *"
        fi
    done
    prev=${words[CURRENT-1]}
    if (( CURRENT > 2 )) && [[ $prev == -* ]] && (( ${+_evpnd_values[$node|$prev]} )); then
        case ${_evpnd_values[$node|$prev]} in
            @file) _files ;;
            @any) return 1 ;;
            *) compadd -- ${=_evpnd_values[$node|$prev]} ;;
        esac
        return
    fi
    if [[ ${words[CURRENT]} == -* ]]; then
        compadd -- ${=_evpnd_opts[$node]}
    elif [[ -n ${_evpnd_words[$node]} ]]; then
        compadd -- ${=_evpnd_words[$node]}
    else
        _files
    fi
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _evpnd "$@"
elif (( $+functions[compdef] )); then
    compdef _evpnd evpnd
fi
"""


def bash(parser: argparse.ArgumentParser, version: str) -> str:
    head = [f"# bash completion for evpnd {version}, generated by `evpnd completion bash` from "
            "its argument parser.",
            "# Install: evpnd completion bash > /etc/bash_completion.d/evpnd (or source it).",
            "declare -gA _evpnd_words _evpnd_opts _evpnd_values"]
    return "\n".join([*head, *_tables(tree(parser), "    [{k}]={v}")]) + BASH


def zsh(parser: argparse.ArgumentParser, version: str) -> str:
    head = ["#compdef evpnd",
            f"# zsh completion for evpnd {version}, generated by `evpnd completion zsh` from "
            "its argument parser.",
            '# Install: evpnd completion zsh > "${fpath[1]}/_evpnd" (then compinit), or '
            "source <(evpnd completion zsh) after compinit.",
            "typeset -gA _evpnd_words _evpnd_opts _evpnd_values"]
    return "\n".join([*head, *_tables(tree(parser), "    {k} {v}")]) + ZSH
