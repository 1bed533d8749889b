"""Policy files: the weights of a meta-trained policy and the layout it was trained for.

A file holds `format`, `layout` (what the actor reads and writes: feature names, action heads,
schedule shape), `layout_hash` (of that layout), `architecture` and `state_dict`. The critic's
privileged inputs are not part of the layout: the actor never reads them, and the architecture
records their number, so adding a training family (which widens them) leaves every policy file
loadable. The layout also records the `ControlSpec` the policy was trained with (the schedule
shape under its base lr, the progress embedding of its features); a file without one was
trained with the defaults (a constant schedule, no embedding). A file may record `initial`:
the hyperparameters every training episode started from (`[episode] fixed_initial`), which
`LearnedOptimizer` then starts from unless told otherwise; a policy trained from lr 1e-2 acts
on what it sees from there, not from CIAO's default 1e-3.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import torch

from lhopt.control.actions import ActionSpace
from lhopt.control.features import FeatureEngine, check_steps_per_epoch, passes
from lhopt.control.policy import Policy
from lhopt.optim import schedules
from lhopt.optim.hparams import HPARAMS, check_value

POLICY_FORMAT = 1
HORIZON_STEPS = 1000  # the run length at which `ControlSpec.horizon_power` leaves the lr as is
EPOCHS_REF = 10.0  # the passes over the data at which `ControlSpec.epochs_power` halves it (q=1)


@dataclass(frozen=True)
class ControlSpec:
    """What a policy was trained with besides its weights.

    schedule: the shape (`lhopt.optim.schedules`) under the base lr that the policy steers:
        "constant" (the paper's setting) or "cosine" (5% warm-up, cosine decay to 0).
    progress_taus: the progress embedding of the features (`FeatureEngine`); () for none.
    heads: the action heads the policy controls (`head_names`: hyperparameters and
        "register"); the others are held at "keep" and their choices are not the policy's
        (nor part of its log-probability). Empty (the default): every head.
    noise_floor: gradient noise below this fraction of the second moment's sum reads as this
        fraction in `log_grad_noise_scale` (`lhopt.optim.stats.statistics_from_raw`); 0 (the
        shipped policy's setting) leaves the rounding error of a run's first step, whose sign
        and size another order of summation changes, as it is.
    epochs: the features read the run's passes over its training data (`FeatureEngine`'s
        `epochs`), which users give as `steps_per_epoch`.
    run_length: the features read the run's length, log T (`FeatureEngine`'s `run_length`).
    horizon_power: p >= 0: the lr CIAO applies is also scaled by (T / `HORIZON_STEPS`)^-p
        (`horizon_factor`), since the best lr falls with the run's horizon; 0 (the default):
        not scaled.
    epochs_power: q >= 0: the lr is also scaled by (1 + E / `EPOCHS_REF`)^-q, E = T /
        `steps_per_epoch` the run's passes over its training data (0 where that is not given
        or infinite), since many passes over little data want a smaller lr; 0 (the default):
        not scaled.
    overfit_gap: g > 0: the controller starts the run over, from its first state at a tenth of
        the lr, where the validation loss parts from the training loss early
        (`lhopt.control.controller`, "Starting over"); 0 (the default): never. Set on a
        trained policy's file; meta-training episodes do not run it.
    fallback_cut: c in (0, 1), with `overfit_gap` g > 0: past the start-over window, where the
        same test holds, the run falls back to its state at the best validation loss and the
        lr it applies is multiplied by c (`lhopt.control.controller`, "Falling back"); 0 (the
        default): never. Set on a trained policy's file; meta-training episodes do not run it.
    hide_val: the policy's features read no validation loss (as a run without one reads),
        and only the start-over and fall-back rules read it; False (the default): both read it.
    no_decay_vectors: tensors of one dimension (biases, norms) start in a param group without
        weight decay (`lhopt.optim.groups.split_vectors`), which `LearnedOptimizer` builds
        from the parameters it is given unless told `decay_vectors=True`; False (the
        default): every tensor is decayed.
    matrix_decay_below, matrix_decay_factor: E0 > 0: in a run of fewer than E0 passes over
        its data (E = T / `steps_per_epoch`, 0 for fresh data, `steps_per_epoch` = inf; not
        applied where `steps_per_epoch` is not given) the controller sets CIAO's
        `matrix_decay_factor` to `matrix_decay_factor`, else to 1: dense matrices
        decay by that fraction of the weight decay, vectors by all of it (data seen
        few times want little decay on the matrices, small data reused many times want it);
        0 (the default): CIAO's factor is left as given. Set on a trained policy's file;
        meta-training episodes do not run it.
    table_decay_factor: not 1: the controller sets CIAO's `table_decay_factor` to it in
        every run: embedding tables (row-sparse at `nn.Embedding`'s scale) decay by that
        multiple of the weight decay; 1 (the default): CIAO's factor is left as given. Set on
        a trained policy's file; meta-training episodes do not run it.
    start_over_batch_norm: False: the start-over rule stays off for a model with batch norm
        (its training loss is read under batch statistics, its validation loss under running
        ones, which lag early in a run at a high lr: their gap is not overfitting there). The
        controller knows the model only where it is given (`LearnedOptimizer(model=...)`);
        without it the rule reads the run as any. True (the default): the rule reads every
        model.
    """

    schedule: str = "constant"
    progress_taus: tuple[float, ...] = ()
    noise_floor: float = 0.0
    heads: tuple[str, ...] = ()
    epochs: bool = False
    run_length: bool = False
    horizon_power: float = 0.0
    epochs_power: float = 0.0
    overfit_gap: float = 0.0
    fallback_cut: float = 0.0
    hide_val: bool = False
    no_decay_vectors: bool = False
    matrix_decay_below: float = 0.0
    matrix_decay_factor: float = 1.0
    table_decay_factor: float = 1.0
    start_over_batch_norm: bool = True

    def __post_init__(self) -> None:
        schedules.get(self.schedule)  # a ValueError naming the allowed shapes
        taus = tuple(self.progress_taus)
        if not all(isinstance(t, int | float) and math.isfinite(t) for t in taus):
            raise ValueError(f"progress_taus={taus!r}: expected finite numbers")
        object.__setattr__(self, "progress_taus", tuple(float(t) for t in taus))
        floor = self.noise_floor
        if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor < 1:
            raise ValueError(f"noise_floor={floor!r}: expected a number in [0, 1)")
        heads = tuple(self.heads)
        allowed = head_names(ActionSpace())
        bad = [h for h in heads if h not in allowed]
        if bad or len(set(heads)) != len(heads):
            raise ValueError(
                f"heads={heads!r}: expected distinct names from {list(allowed)} (empty: all)"
            )
        object.__setattr__(self, "heads", heads)
        for name in ("horizon_power", "epochs_power"):
            power = getattr(self, name)
            if isinstance(power, bool) or not isinstance(power, int | float) or not 0 <= power <= 2:
                raise ValueError(f"{name}={power!r}: expected a number in [0, 2]")
            object.__setattr__(self, name, float(power))
        gap = self.overfit_gap
        if isinstance(gap, bool) or not isinstance(gap, int | float) or not 0 <= gap < math.inf:
            raise ValueError(f"overfit_gap={gap!r}: expected a finite number >= 0 (0: off)")
        object.__setattr__(self, "overfit_gap", float(gap))
        cut = self.fallback_cut
        if isinstance(cut, bool) or not isinstance(cut, int | float) or not 0 <= cut < 1:
            raise ValueError(f"fallback_cut={cut!r}: expected a number in [0, 1) (0: off)")
        if cut and not gap:
            raise ValueError(
                f"fallback_cut={cut:g} with overfit_gap=0: the rule reads the start-over "
                "test's gap; set overfit_gap or leave the cut at 0"
            )
        object.__setattr__(self, "fallback_cut", float(cut))
        below = self.matrix_decay_below
        if (
            isinstance(below, bool)
            or not isinstance(below, int | float)
            or not 0 <= below < math.inf
        ):
            raise ValueError(
                f"matrix_decay_below={below!r}: expected a finite number of passes >= 0 (0: off)"
            )
        object.__setattr__(self, "matrix_decay_below", float(below))
        check_value("matrix_decay_factor", self.matrix_decay_factor)
        object.__setattr__(self, "matrix_decay_factor", float(self.matrix_decay_factor))
        if self.matrix_decay_factor != 1.0 and not self.matrix_decay_below:
            raise ValueError(
                f"matrix_decay_factor={self.matrix_decay_factor:g} with matrix_decay_below=0: "
                "the rule is off; set matrix_decay_below (passes) or leave the factor at 1"
            )
        check_value("table_decay_factor", self.table_decay_factor)
        object.__setattr__(self, "table_decay_factor", float(self.table_decay_factor))
        for name in (
            "epochs",
            "run_length",
            "hide_val",
            "no_decay_vectors",
            "start_over_batch_norm",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: expected True or False")

    def fixed_actions(self, space: ActionSpace) -> tuple[int | None, ...] | None:
        """Per head of `space`, the choice it is held at ("keep") when `heads` leaves it out,
        None where the policy chooses; None when the policy chooses every head."""
        if not self.heads:
            return None
        names = head_names(space)
        return tuple(None if n in self.heads else k for n, k in zip(names, space.keep, strict=True))

    def horizon_factor(self, total_steps: int, steps_per_epoch: float | None = None) -> float:
        """The factor of the applied lr for a run of `total_steps` steps of `steps_per_epoch`
        each pass over the data: (T / 1000)^-p (1 + E / 10)^-q."""
        epochs = passes(total_steps, check_steps_per_epoch(steps_per_epoch))
        return (total_steps / HORIZON_STEPS) ** -self.horizon_power * (
            1.0 + epochs / EPOCHS_REF
        ) ** -self.epochs_power

    def matrix_decay(self, total_steps: int, steps_per_epoch: float | None = None) -> float | None:
        """CIAO's `matrix_decay_factor` for a run of `total_steps` steps of `steps_per_epoch`
        each pass over the data (None: not known, the factor 1); None where the spec leaves
        it as given."""
        if not self.matrix_decay_below:
            return None
        steps_per_epoch = check_steps_per_epoch(steps_per_epoch)
        if steps_per_epoch is None:
            return 1.0
        few = passes(total_steps, steps_per_epoch) < self.matrix_decay_below
        return self.matrix_decay_factor if few else 1.0

    def engine(self, space: ActionSpace) -> FeatureEngine:
        return FeatureEngine(
            space.hparam_kinds,
            space.encoding_names,
            num_registers=space.num_registers,
            progress_taus=self.progress_taus,
            epochs=self.epochs,
            run_length=self.run_length,
        )


def head_names(space: ActionSpace) -> tuple[str, ...]:
    """Names of the heads of `space`, in action order: its hyperparameters, then "register"."""
    return (*(h.hparam for h in space.heads), "register")


# Spec fields a layout holds only when set (not their default): the layouts (and hashes) of
# files made before a field existed stay as they were.
OPTIONAL_LAYOUT_KEYS = (
    "noise_floor",
    "heads",
    "epochs",
    "run_length",
    "horizon_power",
    "epochs_power",
    "overfit_gap",
    "fallback_cut",
    "hide_val",
    "no_decay_vectors",
    "matrix_decay_below",
    "matrix_decay_factor",
    "table_decay_factor",
    "start_over_batch_norm",
)
_FIELD_DEFAULTS = {f.name: f.default for f in fields(ControlSpec)}


def _set(key: str, value) -> bool:
    """Whether a layout holds `key` with `value`: not its default (a falsy default: any
    falsy value)."""
    default = _FIELD_DEFAULTS[key]
    return value != default if default else bool(value)


def _optional(values: dict) -> dict:
    return {
        key: list(values[key]) if key == "heads" else values[key]
        for key in OPTIONAL_LAYOUT_KEYS
        if _set(key, values.get(key, _FIELD_DEFAULTS[key]))
    }


def actor_layout(spec: ControlSpec = ControlSpec(), num_registers: int = 3) -> dict:
    """What the actor reads and writes: the feature names, the action heads, the schedule."""
    space = ActionSpace(num_registers=num_registers)
    return {
        "features": list(spec.engine(space).names),
        "nvec": list(space.nvec),
        "schedule": spec.schedule,
        "progress_taus": list(spec.progress_taus),
        **_optional({key: getattr(spec, key) for key in OPTIONAL_LAYOUT_KEYS}),
    }


def layout_hash(layout: dict | None = None) -> str:
    layout = actor_layout() if layout is None else layout
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]


def default_policy_path() -> Path:
    return Path(str(resources.files("lhopt") / "policies" / "default.pt"))


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a killed writer leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def save_policy_file(
    policy: Policy,
    path: str | Path,
    extra: dict | None = None,
    spec: ControlSpec | None = None,
    initial: dict | None = None,
) -> None:
    """Write `policy` as a shippable file (atomically); `spec` defaults to `policy.spec`,
    `initial` (the hyperparameters its episodes started from) to `policy.initial` if set."""
    spec = spec or getattr(policy, "spec", ControlSpec())
    initial = check_initial(getattr(policy, "initial", {}) if initial is None else initial)
    layout = actor_layout(spec)
    atomic_save(
        {
            "format": POLICY_FORMAT,
            "layout": layout,
            "layout_hash": layout_hash(layout),
            "architecture": policy.architecture(),
            "state_dict": policy.state_dict(),
            **({"initial": initial} if initial else {}),
            **(extra or {}),
        },
        Path(path),
    )


def check_initial(initial: object) -> dict[str, float]:
    """`initial` as {hyperparameter: value}, each a CIAO hyperparameter with an allowed value
    (a ValueError naming the entry otherwise)."""
    if not isinstance(initial, dict):
        raise ValueError(f"initial={initial!r}: expected a dict of CIAO hyperparameters")
    out = {}
    for name, value in initial.items():
        if name not in HPARAMS:
            raise ValueError(
                f"initial[{name!r}]: not a CIAO hyperparameter; known: {sorted(HPARAMS)}"
            )
        check_value(name, value)
        out[name] = value if isinstance(value, bool) else float(value)
    return out


def file_layout(data: dict) -> dict | None:
    """The actor layout a file was made for (None if it does not say)."""
    layout = data.get("layout")
    if not isinstance(layout, dict) or "features" not in layout or "nvec" not in layout:
        return None
    return {
        "features": list(layout["features"]),
        "nvec": list(layout["nvec"]),
        "schedule": layout.get("schedule", ControlSpec.schedule),
        "progress_taus": list(layout.get("progress_taus", ())),
        **_optional(layout),
    }


def file_spec(data: dict) -> ControlSpec | None:
    """The `ControlSpec` a file was trained with (None if its layout names an unknown one)."""
    layout = file_layout(data)
    if layout is None:
        return None
    try:
        return ControlSpec(
            schedule=layout["schedule"],
            progress_taus=tuple(layout["progress_taus"]),
            noise_floor=layout.get("noise_floor", 0.0),
            heads=tuple(layout.get("heads", ())),
            epochs=bool(layout.get("epochs", False)),
            run_length=bool(layout.get("run_length", False)),
            horizon_power=layout.get("horizon_power", 0.0),
            epochs_power=layout.get("epochs_power", 0.0),
            overfit_gap=layout.get("overfit_gap", 0.0),
            fallback_cut=layout.get("fallback_cut", 0.0),
            hide_val=bool(layout.get("hide_val", False)),
            no_decay_vectors=bool(layout.get("no_decay_vectors", False)),
            matrix_decay_below=layout.get("matrix_decay_below", 0.0),
            matrix_decay_factor=layout.get("matrix_decay_factor", 1.0),
            table_decay_factor=layout.get("table_decay_factor", 1.0),
            start_over_batch_norm=bool(layout.get("start_over_batch_norm", True)),
        )
    except (ValueError, TypeError):
        return None


def load_policy(policy: str | Path) -> Policy:
    """Load a policy file ("default": the shipped one), checking that it was made for this
    feature and action layout; the network's `spec` is the `ControlSpec` it was trained with,
    its `initial` the hyperparameters its episodes started from ({} if the file does not say).
    Errors are ValueErrors naming the file. The global torch RNG is left as it was."""
    path = default_policy_path() if policy == "default" else Path(policy)
    if not path.is_file():
        what = "the default policy" if policy == "default" else "policy file"
        raise ValueError(f"{what} {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"policy file {str(path)!r} is corrupt or not a policy ({e})") from e
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != POLICY_FORMAT:
        raise ValueError(
            f"policy file {str(path)!r} has format {fmt!r}; this lhopt reads format {POLICY_FORMAT}"
        )
    spec, layout = file_spec(data), file_layout(data)
    expected = None if spec is None else actor_layout(spec)
    if layout is None or expected is None or layout_hash(layout) != layout_hash(expected):
        found = "no layout" if layout is None else layout_hash(layout)
        raise ValueError(
            f"policy file {str(path)!r} was made for another feature/action layout "
            f"({found} != {layout_hash(expected)}): retrain it with this lhopt"
        )
    for key in ("architecture", "state_dict"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"policy file {str(path)!r} has no {key!r} entry")
    try:
        with torch.random.fork_rng(devices=[]):  # weight init must not move the user's RNG
            net = Policy.from_architecture(data["architecture"])
        net.load_state_dict(data["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"policy file {str(path)!r} does not describe a policy ({e})") from e
    try:
        initial = check_initial(data.get("initial", {}))
    except ValueError as e:
        raise ValueError(f"policy file {str(path)!r} records a bad start: {e}") from e
    net.eval()
    net.spec = spec
    net.initial = initial
    return net
