"""pgraft.pg.install reading an installed package (no checkout): which RECORD entries it takes,
which it refuses, and the hash check -- on a fake site-packages, without pip or root."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from pathlib import Path

import pytest

from pgraft.pg import install


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def _site(tmp_path: Path, extra_records: tuple[str, ...] | list[str] = (), *,
          requires: tuple[str, ...] | list[str] = ()) -> Path:
    site = tmp_path / "site-packages"
    files = {"pgraft/__init__.py": b"__version__ = '9.9.9'\n",
             "pgraft/pg/extension/pgraft.c": b"/* launcher */\n",
             "pgraft/__pycache__/__init__.cpython-311.pyc": b"\0"}
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    info = site / "pgraft-9.9.9.dist-info"
    info.mkdir()
    metadata = "Metadata-Version: 2.1\nName: pgraft\nVersion: 9.9.9\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(metadata)
    lines = [f"{rel},{_digest(data)},{len(data)}" for rel, data in files.items()]
    lines.append(f"pgraft-9.9.9.dist-info/METADATA,{_digest(metadata.encode())},"
                 f"{len(metadata)}")
    lines.append("../../../bin/pgraft,sha256=x,1")  # a console script: written anew
    lines += list(extra_records)
    lines.append("pgraft-9.9.9.dist-info/RECORD,,")
    (info / "RECORD").write_text("\n".join(lines) + "\n")
    return site


@pytest.fixture
def fake_dist(monkeypatch: pytest.MonkeyPatch):
    def use(site: Path) -> None:
        dist = importlib.metadata.PathDistribution(site / "pgraft-9.9.9.dist-info")
        monkeypatch.setattr(importlib.metadata, "distribution", lambda name: dist)
    return use


def test_takes_the_package_and_its_metadata_only(tmp_path: Path, fake_dist) -> None:
    site = _site(tmp_path, requires=["msgpack>=1", 'pytest>=8; extra == "test"',
                                     'uvloop>=0.19; sys_platform != "win32"'])
    fake_dist(site)
    sources = install._package_sources(site)
    rels = sorted(str(f.relative_to(site)) for f in sources.files)
    assert rels == ["pgraft-9.9.9.dist-info/METADATA", "pgraft-9.9.9.dist-info/RECORD",
                    "pgraft/__init__.py", "pgraft/pg/extension/pgraft.c"]
    assert sources.kind == "package" and sources.extension == install.PACKAGED_EXTENSION
    # extras dropped, other markers kept for pip to judge
    assert sources.requirements == ("msgpack>=1", 'uvloop>=0.19; sys_platform != "win32"')
    install.verify_copy(site, sources)  # unchanged files pass


def test_a_record_entry_outside_the_package_is_refused(tmp_path: Path, fake_dist) -> None:
    site = _site(tmp_path, ["msgpack/__init__.py,sha256=x,1"])
    (site / "msgpack").mkdir()
    (site / "msgpack" / "__init__.py").write_text("")
    fake_dist(site)
    with pytest.raises(install.InstallError, match="RECORD lists msgpack/__init__.py, outside"):
        install._package_sources(site)


def test_an_entry_without_a_hash_is_refused(tmp_path: Path, fake_dist) -> None:
    site = _site(tmp_path, ["pgraft/extra.py,,"])
    (site / "pgraft" / "extra.py").write_text("")
    fake_dist(site)
    with pytest.raises(install.InstallError, match="gives no hash for pgraft/extra.py"):
        install._package_sources(site)


def test_a_changed_file_and_an_unknown_hash_are_refused(tmp_path: Path, fake_dist) -> None:
    site = _site(tmp_path)
    fake_dist(site)
    sources = install._package_sources(site)
    (site / "pgraft" / "__init__.py").write_text("changed = True\n")
    with pytest.raises(install.InstallError, match="differs from pgraft's RECORD"):
        install.verify_copy(site, sources)
    odd = install.Sources(sources.kind, sources.root, sources.files, sources.extension,
                          sources.requirements, (("pgraft/__init__.py", "nohash", "x"),))
    with pytest.raises(install.InstallError, match="'nohash', which this Python"):
        install.verify_copy(site, odd)


def test_a_package_without_extension_sources_is_refused(tmp_path: Path, fake_dist) -> None:
    site = _site(tmp_path)
    (site / "pgraft" / "pg" / "extension" / "pgraft.c").unlink()
    fake_dist(site)
    with pytest.raises(install.InstallError, match="carries no PostgreSQL extension sources"):
        install._package_sources(site)
