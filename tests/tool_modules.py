"""The command-line tools as modules: tools/ is no package, so they are loaded by path."""
import importlib.util
import os.path as osp

TOOLS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools')


def load_tool(name: str):
    """``tools/<name>.py`` as a freshly executed module."""
    spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
