"""deploy/prometheus: the config and alert rules pass promtool, and the rules' unit tests pass.

promtool comes with Debian's `prometheus` package (CI installs it through .ci/run); without it
these tests skip and say so.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from accrue.embedded.stack import PortAssignment

PROMETHEUS_DIR = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: `apt-get install prometheus` (CI installs it via .ci/run)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_the_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", *sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.rules.yml")))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_config_passes_promtool_check() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    done = promtool("test", "rules", *sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.test.yml")))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        rule["alert"]
        for path in (PROMETHEUS_DIR / "rules").glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in (PROMETHEUS_DIR / "tests").glob("*.test.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert alerts - tested == set()


def test_the_scrape_config_covers_every_process_on_its_default_port() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    ports = PortAssignment.defaults()
    expected = {name: [f"127.0.0.1:{p.metrics}"] for name, p in ports.services.items()}
    expected["gateway"] = [f"127.0.0.1:{ports.gateway}"]
    assert targets == expected
