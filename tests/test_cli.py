"""The command line: JSON output, streaming, and a clear one-line error with a non-zero exit for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from leapdecode.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_has_text_ids_and_stats(capsys, llm):
    code, out, _ = _run(capsys, "generate", "List three colours.", "--json", "--max-new-tokens", "16",
                        "--method", "ngram", "--threads", "2")
    assert code == 0
    data = json.loads(out)
    assert data["text"] and len(data["token_ids"]) == data["stats"]["new_tokens"] <= 16
    for key in ("seconds", "tokens_per_s", "target_forwards", "mean_accepted"):
        assert data["stats"][key] > 0
    assert data["text"] == llm.tokenizer.decode(data["token_ids"], skip_special_tokens=True)


def test_streams_text_then_stats_and_compares(capsys):
    code, out, err = _run(capsys, "generate", "Say hello.", "--max-new-tokens", "12", "--compare")
    assert code == 0 and out.strip()
    assert "tok/s" in err and "tokens per target forward" in err
    assert "identical output: yes" in err


def test_prompt_from_file_and_raw(capsys, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("def add(a, b):\n    return")
    code, out, _ = _run(capsys, "generate", "--prompt-file", str(f), "--raw", "--json", "--max-new-tokens", "8")
    assert code == 0 and json.loads(out)["stats"]["new_tokens"] >= 1


def _unsupported_arch_dir(tmp_path):
    d = tmp_path / "weird"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "no-such-architecture", "vocab_size": 10}))
    return str(d)


BAD = {
    "missing model path": (["Hello", "--model", "/nonexistent/model"], "not found"),
    "empty prompt": ([""], "prompt is empty"),
    "negative max tokens": (["Hello", "--max-new-tokens", "-5"], "max_new_tokens must be a positive integer"),
    "huge max tokens": (["Hello", "--max-new-tokens", "100000000"], "exceeds the context window"),
    "negative temperature": (["Hello", "--temperature", "-1"], "temperature must be between"),
    "top-p zero": (["Hello", "--top-p", "0"], "top_p must be in"),
    "prompt past the context": (["word " * 9000, "--raw"], "context window"),
    "missing prompt file": (["--prompt-file", "/nonexistent.txt"], "cannot read prompt file"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_a_clear_error(capsys, case):
    args, message = BAD[case]
    code, out, err = _run(capsys, "generate", *args)
    assert code != 0
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_corrupt_gguf_and_bad_directories(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path / "cache"))
    junk = tmp_path / "broken.gguf"
    junk.write_bytes(b"GGUF" + b"\x00garbage" * 100)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    for model, message in ((str(junk), "cannot read GGUF"), (str(empty_dir), "expected a .gguf file"),
                           (_unsupported_arch_dir(tmp_path), "unsupported architecture")):
        code, _, err = _run(capsys, "generate", "Hi", "--model", model)
        assert code != 0 and message in err, err
        errors = [line for line in err.splitlines() if line.startswith("leapdecode: error:")]
        assert len(errors) == 1 and "Traceback" not in err, err


def test_real_process_exit_code():
    done = subprocess.run([sys.executable, "-m", "leapdecode.cli", "generate", "Hi", "--model", "/nope"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "leapdecode: error: model '/nope' not found" in done.stderr


def test_models_lists_the_default(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0 and "smollm2-135m" in out


def test_prompt_from_standard_input():
    done = subprocess.run([sys.executable, "-m", "leapdecode.cli", "generate", "--json", "--max-new-tokens", "6",
                           "--threads", "2"], input="Name a planet.", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stats"]["new_tokens"] >= 1
