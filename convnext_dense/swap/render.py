"""Write a config delta as short, readable Python (mmengine's pretty_text sorts keys and wraps
every tuple one item per line, which buries a six-line delta)."""
from typing import Any, Iterable

_WIDTH = 100
_INDENT = '    '


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            return 'dict(' + ', '.join(f'{k}={_inline(v)}' for k, v in value.items()) + ')'
        return '{' + ', '.join(f'{k!r}: {_inline(v)}' for k, v in value.items()) + '}'
    if isinstance(value, tuple):
        items = [_inline(v) for v in value]
        return '(' + ', '.join(items) + (',)' if len(items) == 1 else ')')
    if isinstance(value, list):
        return '[' + ', '.join(_inline(v) for v in value) + ']'
    return repr(value)


def _block(value: Any, indent: str, prefix: str = '') -> str:
    """``prefix`` and ``value`` at column ``len(indent)``, continuation lines indented further."""
    text = prefix + _inline(value)
    if len(indent) + len(text) + 1 <= _WIDTH or not isinstance(value, (dict, list, tuple)) \
            or not value:
        return text
    inner = indent + _INDENT
    if isinstance(value, dict):
        named = all(isinstance(k, str) and k.isidentifier() for k in value)
        items = [_block(v, inner, f'{k}=' if named else f'{k!r}: ') for k, v in value.items()]
        opening, closing = ('dict(', ')') if named else ('{', '}')
    else:
        items = [_block(v, inner) for v in value]
        opening, closing = ('[', ']') if isinstance(value, list) else ('(', ')')
    return prefix + opening + '\n' + ',\n'.join(inner + item for item in items) + closing


def render_config(variables: dict, comments: Iterable[str] = ()) -> str:
    """Python source assigning each top-level key of ``variables``, after ``#`` comment lines."""
    lines = [f'# {line}' for line in comments]
    for name, value in variables.items():
        lines.append(_block(value, '', f'{name} = '))
    return '\n'.join(lines) + '\n'
