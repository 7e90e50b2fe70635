"""Settings: source order (flag > FTM_* > TOML > default), refusals with exit code 4, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

from ftm.cli import main
from ftm.errors import SettingsError
from ftm.settings import FtmSettings, explain_settings, load_settings

REPO_TOML = Path(__file__).resolve().parents[1] / "ftm.toml"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_sources_apply_strongest_first_and_keep_siblings(tmp_path: Path) -> None:
    toml = _write(
        tmp_path / "ftm.toml",
        '[storage]\nroot = "from-toml"\nregion = "eu-west-1"\n[prefetch]\nfirms_per_chunk = 7\n',
    )
    assert load_settings(None, environ={}).storage.root == "from-toml"  # ./ftm.toml by default
    env = {"FTM_STORAGE__ROOT": "from-env", "FTM_PREFETCH__CHECKPOINT_EVERY": "3"}
    settings = load_settings(toml, environ=env)
    assert settings.storage.root == "from-env"
    assert settings.storage.region == "eu-west-1"  # a sibling from the weaker TOML survives
    assert (settings.prefetch.firms_per_chunk, settings.prefetch.checkpoint_every) == (7, 3)
    flagged = load_settings(toml, overrides={"storage": {"root": "from-flag", "region": None}}, environ=env)
    assert flagged.storage.root == "from-flag"
    assert flagged.storage.region == "eu-west-1"  # a flag not given does not mask other sources
    sources = {key: source for key, _, source in explain_settings(toml, {"storage": {"root": "x"}}, env)}
    assert sources["storage.root"] == "flag"
    assert sources["prefetch.checkpoint_every"] == "env"
    assert sources["prefetch.firms_per_chunk"] == "toml"
    assert sources["map.firms_per_part"] == "default"


def test_unknown_toml_key_is_refused_with_its_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write(tmp_path / "ftm.toml", '[storage]\nrot = "typo"\n')
    assert main(["config"]) == 4
    err = capsys.readouterr().err
    assert "storage.rot" in err and "ftm.toml" in err and "Traceback" not in err


def test_unknown_toml_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="storag"):
        load_settings(_write(tmp_path / "x.toml", '[storag]\nroot = "a"\n'), environ={})


def test_wrong_type_in_toml_is_refused_with_its_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write(tmp_path / "ftm.toml", '[prefetch]\nfirms_per_chunk = "many"\n')
    assert main(["config", "--json"]) == 4
    captured = capsys.readouterr()
    assert "prefetch.firms_per_chunk" in captured.err and captured.out == ""


def test_invalid_toml_syntax_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(_write(tmp_path / "x.toml", "[storage\n"), environ={})


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("FTM_STORAGE__ROOTS", "x", "FTM_STORAGE__ROOTS"),
        ("FTM_STORGE__ROOT", "x", "FTM_STORGE__ROOT"),
        ("FTM_PREFETCH__FIRMS_PER_CHUNK", "abc", "FTM_PREFETCH__FIRMS_PER_CHUNK"),
        ("FTM_PREFETCH__FIRMS_PER_CHUNK", "0", "FTM_PREFETCH__FIRMS_PER_CHUNK"),
    ],
)
def test_bad_environment_variable_is_refused_with_its_name(
    name: str, value: str, named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["config"]) == 4
    assert named in capsys.readouterr().err


def test_missing_config_file_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert main(["--config", "nowhere.toml", "config"]) == 4
    assert "nowhere.toml" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["[llm]\napi_key", "[source.wrds]\npassword"])
def test_secrets_are_never_read_from_toml(key: str, tmp_path: Path) -> None:
    toml = _write(tmp_path / "s.toml", f'{key} = "hunter2"\n')
    with pytest.raises(SettingsError, match="secret") as raised:
        load_settings(toml, environ={})
    assert "hunter2" not in str(raised.value)


def test_secrets_from_the_environment_are_masked_everywhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FTM_LLM__API_KEY", "sk-very-secret")
    settings = load_settings()
    assert settings.llm.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings) and "sk-very-secret" not in json.dumps(settings.masked())
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["llm.api_key"] == {"value": "**********", "source": "env"}
    assert main(["config"]) == 0
    captured = capsys.readouterr()
    assert "sk-very-secret" not in captured.out + captured.err and "llm.api_key" in captured.err


def test_config_json_gives_every_setting_with_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _write(tmp_path / "other.toml", "[reduce]\nmin_firms = 5\n")
    monkeypatch.setenv("FTM_CONFIG", "other.toml")
    monkeypatch.setenv("FTM_STORAGE__ROOT", "s3://bucket/prefix")
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["reduce.min_firms"] == {"value": 5, "source": "toml"}
    assert shown["storage.root"] == {"value": "s3://bucket/prefix", "source": "env"}
    assert shown["prefetch.firms_per_chunk"] == {"value": 200, "source": "default"}
    assert len(shown) == len(explain_settings(environ={}))


def test_repository_ftm_toml_holds_every_setting_at_its_default() -> None:
    """ftm.toml documents every setting; a setting missing there, or a drifted default, fails."""
    data = tomllib.loads(REPO_TOML.read_text())
    assert FtmSettings.model_validate(data) == FtmSettings.model_validate({})
    text = REPO_TOML.read_text()
    for key, _, _ in explain_settings(environ={}):
        section, _, name = key.rpartition(".")
        assert f"[{section}]" in text, f"ftm.toml has no [{section}] section"
        assert f"\n{name} = " in text or f"# {name} " in text or f"# {name}:" in text, f"ftm.toml lacks {key}"


@pytest.mark.parametrize("value", ["subnet-a,subnet-b", "subnet-a, subnet-b", '["subnet-a", "subnet-b"]'])
def test_a_list_setting_from_the_environment_may_be_comma_separated_or_json(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FTM_AWS__SUBNET_IDS", value)
    assert main(["config", "--json"]) == 0, capsys.readouterr().err
    shown = json.loads(capsys.readouterr().out)
    assert shown["aws.subnet_ids"] == {"value": ["subnet-a", "subnet-b"], "source": "env"}


def test_a_list_setting_of_broken_json_is_refused_naming_the_variable_and_both_forms(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FTM_AWS__SUBNET_IDS", '["subnet-a"')
    assert main(["config"]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert "FTM_AWS__SUBNET_IDS is not valid JSON" in err and "comma-separated values" in err
    assert "EnvSettingsSource" not in err


def test_a_misspelt_key_is_refused_with_the_closest_keys_and_the_flag_it_may_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _write(tmp_path / "ftm.toml", "[map]\nbatchsize = 3\nworker = 2\n")
    assert main(["config"]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert "map.worker (key in ftm.toml): not a setting: did you mean map.workers" in err
    assert "map.batchsize (key in ftm.toml): not a setting: did you mean" in err
    assert "embedding.batch_size" in err and "`ftm submit --batch-size` is a flag, not a setting" in err
    assert "Extra inputs" not in err
