"""tools/students_env.py: the students' .env is the server's without its private key."""
import pytest

from common.config import create_env_file, load_settings
from tools.students_env import main


@pytest.mark.points(1)
def test_the_students_env_loads_as_a_clients_and_holds_no_private_key(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SERVER_PRIVATE_KEY", raising=False)
    server_env, copy = tmp_path / ".env", tmp_path / "students.env"
    create_env_file(server_env)
    server = load_settings(server_env, create=False, for_server=True)
    assert main(["--env", str(server_env), "--out", str(copy), "--host", "192.168.1.20",
                 "--broadcast", "192.168.1.255"]) == 0
    text = copy.read_text(encoding="utf-8")
    assert server.server_private_key.hex() not in text
    assert not [line for line in text.splitlines() if line.startswith("SERVER_PRIVATE_KEY")]
    student = load_settings(copy, create=False)
    assert student.server_private_key is None
    assert (student.psk, student.server_public_key) == (server.psk, server.server_public_key)
    assert (student.host, student.broadcast_addr) == ("192.168.1.20", "192.168.1.255")
    assert "SERVER_PRIVATE_KEY left out" in capsys.readouterr().out
    assert main(["--env", str(server_env), "--out", str(copy)]) == 1   # never replaced
    assert "exists already" in capsys.readouterr().err
