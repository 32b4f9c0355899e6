"""spawner/backend/fleet_dirs.py: the root-owned host folder a container sees as /etc/spawner, on
this machine's filesystem (the integration and containment suites check it from inside)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from spawner import names
from spawner.backend.fleet_dirs import fleet_host_dir, make_fleet_dir, write_fleet_files
from spawner.backend.runner_socket import AGENT_UID, RunDirs
from spawner.models import SpecFile

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="files owned by root need a worker that is root")


@root_only
def test_files_land_root_owned_in_the_agents_group_each_with_its_mode_and_are_replaced_whole(tmp_path):
    run_path = str(tmp_path / "spawner-a1")
    folder = make_fleet_dir(run_path)
    assert folder == fleet_host_dir(run_path) == run_path + names.FLEET_HOST_DIR_SUFFIX
    st = os.stat(folder)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    env = SpecFile(path=names.SECRETS_FILE, content=json.dumps({"TOKEN": "s3cret"}).encode(), mode=0o440)
    labels = SpecFile(path=f"{names.FLEET_DIR}/labels.json", content=b"{}", mode=0o400)
    write_fleet_files(folder, [env, labels])
    write_fleet_files(folder, [SpecFile(path=names.SECRETS_FILE, content=b'{"TOKEN": "t2"}', mode=0o440)])
    assert sorted(os.listdir(folder)) == ["env.json", "labels.json"]  # no temporary file left
    for name, mode in (("env.json", 0o440), ("labels.json", 0o400)):
        st = os.stat(os.path.join(folder, name))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, AGENT_UID, mode)
    with open(os.path.join(folder, "env.json")) as fh:
        assert json.load(fh) == {"TOKEN": "t2"}


@root_only
def test_only_files_right_in_the_fleet_folder_are_written_and_a_symlink_is_never_followed(tmp_path):
    folder = make_fleet_dir(str(tmp_path / "spawner-a1"))
    assert folder is not None
    with pytest.raises(ValueError):
        write_fleet_files(folder, [SpecFile(path="/etc/passwd", content=b"x", mode=0o644)])
    with pytest.raises(ValueError):
        write_fleet_files(folder, [SpecFile(path=f"{names.FLEET_DIR}/sub/x", content=b"x", mode=0o644)])
    os.symlink(tmp_path, tmp_path / "link")
    with pytest.raises(OSError):
        write_fleet_files(str(tmp_path / "link"), [SpecFile(path=names.SECRETS_FILE, content=b"{}", mode=0o440)])
    assert not (tmp_path / "env.json").exists()


def test_a_worker_that_cannot_give_the_folder_to_root_makes_none(tmp_path, monkeypatch):
    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refuse)
    run_path = str(tmp_path / "spawner-a1")
    assert make_fleet_dir(run_path) is None
    assert not os.path.exists(fleet_host_dir(run_path))


@root_only
def test_the_fleet_folder_goes_with_its_socket_folder_and_is_kept_while_that_is(tmp_path):
    dirs = RunDirs(str(tmp_path))
    kept, gone = (str(tmp_path / name) for name in ("spawner-a1", "spawner-a2"))
    for run_path in (kept, gone):
        os.mkdir(run_path)
        assert make_fleet_dir(run_path) is not None
    assert dirs.prune({kept}, older_than_seconds=-1) == 2  # a2 and its fleet folder
    assert sorted(os.listdir(tmp_path)) == ["spawner-a1", "spawner-a1" + names.FLEET_HOST_DIR_SUFFIX]
    dirs.remove(kept)
    assert os.listdir(tmp_path) == []


@root_only
def test_folders_of_a_container_this_engine_does_not_list_stay_while_its_daemon_listens(tmp_path):
    """Another fleet on another dockerd may share the run folder: its containers are not in this
    worker's listing, but their daemons listen, so their socket and fleet folders are left alone
    (a pruned fleet folder would leave that agent's turns without its environment). A planted
    symlink in place of the socket counts as nobody listening."""
    import socket

    dirs = RunDirs(str(tmp_path))
    served, dead, planted = (str(tmp_path / name) for name in ("spawner-b1", "spawner-b2", "spawner-b3"))
    for run_path in (served, dead, planted):
        os.mkdir(run_path)
        assert make_fleet_dir(run_path) is not None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(served, names.RUNNER_SOCKET_NAME))
    listener.listen(1)
    closed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    closed.bind(os.path.join(dead, names.RUNNER_SOCKET_NAME))  # bound, nobody listens: a dead daemon's
    closed.close()
    os.symlink(os.path.join(served, names.RUNNER_SOCKET_NAME), os.path.join(planted, names.RUNNER_SOCKET_NAME))
    try:
        assert dirs.prune(set(), older_than_seconds=-1) == 4  # b2 and b3, each with its fleet folder
        assert sorted(os.listdir(tmp_path)) == ["spawner-b1", "spawner-b1" + names.FLEET_HOST_DIR_SUFFIX]
    finally:
        listener.close()
