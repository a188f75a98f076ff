"""The package's shape: importing it only registers, no import circle, the library never imports
its extras, outputs are declared without building a model."""
import ast
import json
import subprocess
import tarfile
import sys
from pathlib import Path

import pytest

from convnext_dense import ConvNeXt
from convnext_dense.model.archs import ARCH_SETTINGS, declared_outputs
from tiny import TINY_ARCH

PACKAGE = Path(__file__).resolve().parents[1] / 'convnext_dense'

_GLOBALS = '''
import json, torch
from mmengine.fileio.backends import backends
from mmengine.runner import CheckpointLoader, checkpoint
def state():
    return dict(loader=repr(CheckpointLoader._schemes.get('')),
                local_backend=repr(backends.get('local')),
                safe_globals=sorted(map(repr, torch.serialization.get_safe_globals())),
                load_to_model=repr(checkpoint._load_checkpoint_to_model))
before = state()
import convnext_dense
after_package = state()
import convnext_dense.model_checkpoints
print(json.dumps([before, after_package, state()]))
'''


def test_import_changes_no_mmengine_or_torch_global():
    result = subprocess.run([sys.executable, '-c', _GLOBALS], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after_package, after_switch = json.loads(result.stdout.strip().splitlines()[-1])
    assert after_package == before
    # The switch is what changes them (so the comparison above can fail).
    for key in before:
        assert after_switch[key] != before[key], key


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path):
    """Modules of the package that ``path`` imports, at any depth of the file (functions too)."""
    name = _module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    modules = {_module_name(p) for p in PACKAGE.rglob('*.py')}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            for alias in node.names:
                sub = f'{target}.{alias.name}'
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph():
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob('*.py')}


def test_no_import_circle():
    graph, state, stack = _graph(), {}, []

    def visit(module):
        state[module] = 'open'
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 'open':
                cycle = stack[stack.index(target):] + [target]
                pytest.fail('import circle: ' + ' -> '.join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 'done'

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_library_never_imports_the_extras():
    offenders = {module: sorted(t for t in targets if t.startswith('convnext_dense.extras'))
                 for module, targets in _graph().items()
                 if not module.startswith('convnext_dense.extras')}
    assert {m: t for m, t in offenders.items() if t} == {}


@pytest.mark.parametrize('arch', [*ARCH_SETTINGS, 'tiny-dict'])
@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 2, 3), (3, 1), -1])
def test_declared_outputs_are_the_built_backbones(arch, out_indices):
    arch = TINY_ARCH if arch == 'tiny-dict' else arch
    backbone = ConvNeXt(arch=arch, out_indices=out_indices)
    assert declared_outputs(arch, out_indices) == (backbone.out_channels, backbone.out_strides)


@pytest.mark.slow
def test_sdist_carries_every_tracked_file_but_the_ci_script(tmp_path):
    root = PACKAGE.parent
    tracked = subprocess.run(['git', 'ls-files'], cwd=root, capture_output=True, text=True,
                             check=True).stdout.split()
    expected = {name for name in tracked if not name.startswith(('.ci/', '.gitignore'))}
    subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir', str(tmp_path)],
                   cwd=root, capture_output=True, text=True, check=True, timeout=300)
    (archive,) = tmp_path.glob('convnext_dense-*.tar.gz')
    with tarfile.open(archive) as sdist:
        shipped = {name.split('/', 1)[1] for name in sdist.getnames() if '/' in name}
    assert expected - shipped == set()
    assert 'LICENSE' in shipped
