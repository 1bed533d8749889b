import io
import math

import pytest

from lhopt.cli import demo, main


def test_demo_trains_with_the_shipped_policy_and_prints_its_decisions():
    out = io.StringIO()
    records = demo(steps=300, decisions=5, seed=0, out=out)
    assert [r["step"] for r in records] == [0, 60, 120, 180, 240]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert all(math.isfinite(r["val_loss"]) and 0 <= r["val_acc"] <= 1 for r in records)
    assert all(math.isfinite(v) for r in records for v in r["features"].values())
    text = out.getvalue()
    assert "300 steps in" in text and "5 decisions of the shipped policy" in text
    assert len(text.splitlines()) == 1 + 5 + 1


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])
    assert "--steps=0" in capsys.readouterr().err
