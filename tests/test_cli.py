import io
import math

import numpy as np
import pytest

from lhopt.cli import demo, main


def test_demo_trains_and_reports_finite_features():
    out = io.StringIO()
    records = demo(steps=300, decisions=5, seed=0, out=out)
    assert [r["step"] for r in records] == [60, 120, 180, 240, 300]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert all(np.isfinite(r["features"]).all() for r in records)
    assert all(math.isfinite(r["val_loss"]) for r in records)
    assert "300 steps in" in out.getvalue()


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])
    assert "--steps=0" in capsys.readouterr().err
