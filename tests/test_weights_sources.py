"""Checkpoint sources: URL (downloaded once), hub id (HF cache, offline mode), fast failures."""
import functools
import hashlib
import http.server
import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from convnext_dense import ConvNeXt
from convnext_dense.weights import load_pretrained, resolve_source
from convnext_dense.weights.sources import url_cache_path
from tiny import TINY_ARCH
from weights_reference import ARCH, build_hf_classifier, official_from_hf

OFFICIAL_URL = 'https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth'
HUB_ID = 'facebook/convnext-base-224-22k'
UNREACHABLE = 'http://127.0.0.1:9/convnext_base_22k_224.pth'  # discard port: nothing listens
FAST_S = 5.0
HUB_COMMIT = 'c0ffee' + '0' * 34


@pytest.fixture(scope='module')
def hf_model():
    return build_hf_classifier()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    return tmp_path / 'torch_home'


def test_official_url_maps_to_torch_hub_cache(torch_home):
    assert url_cache_path(OFFICIAL_URL) == torch_home / 'hub' / 'checkpoints' / \
        'convnext_base_22k_224.pth'


def test_official_url_is_used_from_the_cache_without_network(torch_home, hf_model):
    cached = url_cache_path(OFFICIAL_URL)
    cached.parent.mkdir(parents=True)
    torch.save({'model': official_from_hf(hf_model.state_dict())}, cached)
    assert resolve_source(OFFICIAL_URL) == cached
    conversion = load_pretrained(ConvNeXt(arch=ARCH), OFFICIAL_URL)
    assert conversion.layout == 'official ConvNeXt'


def test_unreachable_url_fails_fast_and_says_where_to_put_the_file(torch_home):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        load_pretrained(ConvNeXt(arch=ARCH), UNREACHABLE)
    assert time.monotonic() - start < FAST_S
    message = str(info.value)
    assert f'put it at {torch_home}/hub/checkpoints/convnext_base_22k_224.pth' in message
    assert 'offline' in message and 'its local path in place of the URL' in message
    assert not list((torch_home / 'hub' / 'checkpoints').glob('*'))  # no partial file left


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / 'served'
    root.mkdir()
    _CountingHandler.requests = []
    handler = functools.partial(_CountingHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()
    thread.join()


def test_url_is_downloaded_once_with_progress(torch_home, http_server, hf_model, capsys):
    root, base = http_server
    torch.save({'model': official_from_hf(hf_model.state_dict())}, root / 'convnext_small.pth')
    url = f'{base}/convnext_small.pth'
    first = load_pretrained(ConvNeXt(arch=ARCH), url)
    assert 'convnext_small.pth' in capsys.readouterr().err  # the progress bar
    second = load_pretrained(ConvNeXt(arch=ARCH), url)
    assert _CountingHandler.requests == ['/convnext_small.pth']
    assert first.mapped == second.mapped
    assert url_cache_path(url).is_file()


def test_urls_sharing_a_file_name_are_cached_apart(torch_home, http_server, hf_model):
    root, base = http_server
    small = ConvNeXt(arch=ARCH).state_dict()
    for folder, weights in (('a', official_from_hf(hf_model.state_dict())), ('b', small)):
        (root / folder).mkdir()
        torch.save(weights, root / folder / 'model.pth')
    first, second = resolve_source(f'{base}/a/model.pth'), resolve_source(f'{base}/b/model.pth')
    assert first == torch_home / 'hub' / 'checkpoints' / 'model.pth' and second != first
    assert second.name == 'model.pth' and second.read_bytes() == (root / 'b' / 'model.pth'
                                                                   ).read_bytes()
    assert resolve_source(f'{base}/a/model.pth') == first  # each from its own place after
    assert resolve_source(f'{base}/b/model.pth') == second
    assert _CountingHandler.requests == ['/a/model.pth', '/b/model.pth']


def test_hash_in_file_name_is_checked(torch_home, http_server, hf_model):
    root, base = http_server
    good = root / 'tmp.pth'
    torch.save({'model': official_from_hf(hf_model.state_dict())}, good)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    good.rename(root / f'convnext-{digest[:8]}.pth')
    assert resolve_source(f'{base}/convnext-{digest[:8]}.pth').is_file()
    (root / f'convnext-{digest[:8]}.pth').rename(root / 'convnext-0badc0de.pth')
    with pytest.raises(ValueError, match='not the 0badc0de in its name'):
        resolve_source(f'{base}/convnext-0badc0de.pth')
    assert not url_cache_path(f'{base}/convnext-0badc0de.pth').exists()


def _hf_cache_snapshot(hf_home, repo_id, files):
    """Lay out a Hugging Face hub cache entry the way huggingface_hub writes one."""
    commit = 'a' * 40
    repo = hf_home / 'hub' / f'models--{repo_id.replace("/", "--")}'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(commit)
    snapshot = repo / 'snapshots' / commit
    snapshot.mkdir(parents=True)
    for name, writer in files.items():
        writer(snapshot / name)


_HUB_SCRIPT = textwrap.dedent(f'''
    import json, sys, time
    from convnext_dense import ConvNeXt
    from convnext_dense.weights import load_pretrained
    results = {{}}
    for repo_id in sys.argv[1:]:
        start = time.monotonic()
        try:
            model = ConvNeXt(arch={TINY_ARCH!r})
            layout = load_pretrained(model, repo_id).layout
            total = sum(float(t.double().sum()) for t in model.state_dict().values())
            results[repo_id] = dict(ok=True, layout=layout, total=total)
        except FileNotFoundError as err:
            results[repo_id] = dict(ok=False, error=str(err))
        results[repo_id]['seconds'] = time.monotonic() - start
    print(json.dumps(results))
''')


def _run_hub_script(env_overrides, repo_ids):
    import os
    env = dict(os.environ, **env_overrides)
    result = subprocess.run([sys.executable, '-c', _HUB_SCRIPT, *repo_ids], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """The hub's file endpoint as huggingface_hub uses it: /<org>/<name>/resolve/<rev>/<file>."""
    root = None
    requests = []

    def do_HEAD(self):
        self._answer(with_body=False)

    def do_GET(self):
        self._answer(with_body=True)

    def _answer(self, with_body):
        parts = self.path.split('/')
        if len(parts) != 6 or parts[3] != 'resolve':
            return self._refuse(404, 'RepoNotFound')  # e.g. its telemetry calls
        type(self).requests.append((parts[4], parts[5]))
        repo = self.root / parts[1] / parts[2]
        if not repo.is_dir():
            return self._refuse(401, 'RepoNotFound')
        if not (repo / parts[5]).is_file():
            return self._refuse(404, 'EntryNotFound')
        data = (repo / parts[5]).read_bytes()
        self.send_response(200)
        self.send_header('X-Repo-Commit', HUB_COMMIT)
        self.send_header('ETag', f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def _refuse(self, status, code):
        self.send_response(status)
        self.send_header('X-Error-Code', code)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(tmp_path):
    _FakeHub.root, _FakeHub.requests = tmp_path / 'hub_repos', []
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _FakeHub.root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.slow
def test_sharded_hub_model_is_fetched_whole_then_read_offline(tmp_path, fake_hub):
    root, endpoint = fake_hub
    model = build_hf_classifier()
    model.save_pretrained(root / 'someone' / 'sharded', max_shard_size='100KB')
    model.save_pretrained(root / 'someone' / 'whole')
    shards = sorted(p.name for p in (root / 'someone' / 'sharded').glob('model-*.safetensors'))
    assert len(shards) > 1
    env = {'HF_HOME': str(tmp_path / 'hf_home'), 'HF_ENDPOINT': endpoint}
    online = _run_hub_script(dict(env, HF_HUB_OFFLINE='0'), ['someone/sharded', 'someone/whole'])
    assert online['someone/sharded']['ok'], online['someone/sharded']
    assert online['someone/sharded']['total'] == online['someone/whole']['total']
    # The shards come from the commit the index was read at, not from whatever main is later.
    fetched = [(revision, name) for revision, name in _FakeHub.requests if name in shards]
    assert sorted(set(fetched)) == [(HUB_COMMIT, name) for name in shards]
    offline = _run_hub_script(dict(env, HF_HUB_OFFLINE='1'), ['someone/sharded'])
    assert offline['someone/sharded'] == dict(online['someone/sharded'],
                                              seconds=offline['someone/sharded']['seconds'])


@pytest.mark.slow
def test_hub_index_naming_a_missing_shard_is_refused(tmp_path, fake_hub):
    root, endpoint = fake_hub
    build_hf_classifier().save_pretrained(root / 'someone' / 'broken',
                                                   max_shard_size='100KB')
    missing = sorted((root / 'someone' / 'broken').glob('model-*.safetensors'))[-1]
    missing.unlink()
    results = _run_hub_script({'HF_HOME': str(tmp_path / 'hf_home'), 'HF_ENDPOINT': endpoint,
                               'HF_HUB_OFFLINE': '0'}, ['someone/broken'])
    assert not results['someone/broken']['ok']
    assert (f"its model.safetensors.index.json names the shard '{missing.name}', which the "
            'repository lacks') in results['someone/broken']['error']


@pytest.mark.slow
def test_hub_id_offline_uses_cache_or_fails_fast(tmp_path, hf_model):
    hf_home = tmp_path / 'hf_home'
    config = {'model_type': 'convnext', 'depths': list(TINY_ARCH['depths']),
              'hidden_sizes': list(TINY_ARCH['channels'])}
    _hf_cache_snapshot(hf_home, 'someone/convnext-cached', {
        'config.json': lambda p: p.write_text(json.dumps(config)),
        'pytorch_model.bin': lambda p: torch.save(hf_model.state_dict(), p)})
    results = _run_hub_script({'HF_HOME': str(hf_home), 'HF_HUB_OFFLINE': '1'},
                              ['someone/convnext-cached', HUB_ID])
    cached, missing = results['someone/convnext-cached'], results[HUB_ID]
    assert cached['ok'] and cached['layout'] == 'Hugging Face ConvNextForImageClassification'
    assert not missing['ok'] and missing['seconds'] < FAST_S
    assert 'HF_HUB_OFFLINE is set' in missing['error']
    assert f'hf download {HUB_ID} config.json pytorch_model.bin --local-dir DIR' in missing['error']
    assert str(hf_home / 'hub') in missing['error']


@pytest.mark.slow
def test_hub_id_with_unreachable_hub_fails_fast(tmp_path):
    results = _run_hub_script({'HF_HOME': str(tmp_path / 'hf_home'), 'HF_HUB_OFFLINE': '0',
                               'HF_ENDPOINT': 'http://127.0.0.1:9'}, [HUB_ID])
    result = results[HUB_ID]
    assert not result['ok'] and result['seconds'] < FAST_S
    assert f"cannot fetch '{HUB_ID}'" in result['error']
    assert 'pass DIR in place of the hub id' in result['error']
    # It may have been meant as a folder that is not there: the message says it looked.
    assert result['error'].startswith(f"'{HUB_ID}' is no file or folder under ")
