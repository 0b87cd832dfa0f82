"""bench/write_benchmark_page.py: several pytest-benchmark runs on one page, each named."""

import json

import pytest

from bench import write_benchmark_page


def fake_run(path, target: str, median: float) -> None:
    bench = {
        "group": "compress-quantize4",
        "name": "test_quantize4[64M]",
        "stats": {"median": median},
        "extra_info": {"fraction_of_copy_alongside": 0.4, "numba_cpu_name": target},
    }
    payload = {
        "machine_info": {"cpu": {"brand_raw": "Some CPU", "count": 2}},
        "benchmarks": [bench],
    }
    path.write_text(json.dumps(payload))


def test_each_run_gets_its_section_command_and_target(tmp_path):
    native, haswell, page = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "page.md"
    fake_run(native, "host", 0.030)
    fake_run(haswell, "haswell", 0.045)
    write_benchmark_page.main(
        ["--bench-json", str(native), "--bench-command", "pytest bench A",
         "--bench-json", str(haswell), "--bench-command", "pytest bench B", "--out", str(page)]
    )  # fmt: skip
    text = page.read_text()
    first = text.index("## Kernel and optimizer benchmarks\n")
    second = text.index("## Kernel and optimizer benchmarks, Numba target haswell")
    assert first < text.index("`pytest bench A`") < text.index("| 30.00 |") < second
    assert second < text.index("`pytest bench B`") < text.index("| 45.00 |")


def test_a_command_without_its_run_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        write_benchmark_page.main(["--bench-command", "x", "--out", str(tmp_path / "p.md")])
    assert raised.value.code == 2 and "--bench-json" in capsys.readouterr().err
