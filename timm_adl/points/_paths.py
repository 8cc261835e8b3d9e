"""Module-path helpers shared by the point analysis: prefixes, parents, shell-style patterns."""

from __future__ import annotations

import fnmatch

__all__ = ['match_path', 'parent', 'prefixes']


def prefixes(path: str) -> list[str]:
    parts = path.split('.') if path else []
    return ['.'.join(parts[: i + 1]) for i in range(len(parts))]


def parent(path: str) -> str:
    return path.rpartition('.')[0]


def match_path(pattern: str, path: str) -> bool:
    """Shell-style match, segment by segment: ``'stages.*'`` matches ``stages.0`` but not ``stages.0.blocks``;
    ``'**'`` matches any number of segments."""
    pat, parts = pattern.split('.'), path.split('.')

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == '**':
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        return j < len(parts) and fnmatch.fnmatchcase(parts[j], pat[i]) and match(i + 1, j + 1)

    return match(0, 0)
