"""Which parameters of a user's module a :class:`~gvbench.tasks.ModuleTask` measures, and the
groups that get metrics of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from torch import nn

# Names, a predicate ``(name, parameter) -> bool``, or None (every one that requires grad).
ParameterChoice = Iterable[str] | Callable[[str, nn.Parameter], bool] | None


def select_parameters(module: nn.Module, parameters: ParameterChoice) -> list[str]:
    """The names of the measured parameters, in the module's order (or the order listed);
    each a floating-point one, since only those have a gradient."""
    named = dict(module.named_parameters())
    if parameters is None:
        chosen = [n for n, p in named.items() if p.requires_grad]
    elif callable(parameters):
        chosen = [n for n, p in named.items() if parameters(n, p)]
    else:
        if isinstance(parameters, str):
            raise TypeError(
                f"parameters must be a list of names or a predicate, got the string "
                f"{parameters!r}; write [{parameters!r}]"
            )
        chosen = list(parameters)
        unknown = [n for n in chosen if n not in named]
        if unknown:
            raise ValueError(
                f"parameters {unknown} are not in the module; it has: {', '.join(named)}"
            )
        repeated = sorted({n for n in chosen if chosen.count(n) > 1})
        if repeated:
            raise ValueError(f"parameters lists {repeated} more than once; list each name once")
    if not chosen:
        raise ValueError("no parameter to measure (parameters selected none)")
    discrete = [n for n in chosen if not (named[n].is_floating_point() or named[n].is_complex())]
    if discrete:
        raise ValueError(
            f"parameters {discrete} are not floating point (dtype "
            f"{named[discrete[0]].dtype}); a gradient exists only for floating-point ones"
        )
    return chosen


def group_parameters(
    names: list[str], groups: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]] | None:
    """The measured ``names`` of each group: ``groups`` maps a group to name prefixes; by
    default, one group per top-level child module when there are two or more (else none)."""
    if groups is None:
        tops = {n.split(".", 1)[0] if "." in n else "" for n in names}
        if len(tops) < 2 or "" in tops:
            return None
        groups = {top: [top + "."] for top in sorted(tops)}
    if not isinstance(groups, Mapping):
        raise TypeError(
            f"groups must map a group name to a list of name prefixes, got {type(groups).__name__}"
        )
    result: dict[str, list[str]] = {}
    for group, prefixes in groups.items():
        if (
            isinstance(prefixes, str)
            or not isinstance(prefixes, Iterable)
            or not all(isinstance(p, str) for p in prefixes)
        ):
            # A string would be read letter by letter, each letter a prefix.
            raise TypeError(
                f"groups[{group!r}] must be a list of name prefixes, got {prefixes!r}"
                + (f"; write [{prefixes!r}]" if isinstance(prefixes, str) else "")
            )
        if group == "all":
            raise ValueError("'all' names the whole gradient; choose another group name")
        members = [n for n in names if any(n.startswith(p) for p in prefixes)]
        if not members:
            raise ValueError(f"group {group!r} matches no measured parameter")
        result[group] = members
    return result
