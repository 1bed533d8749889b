"""Fixed lists of task configurations that the benchmark runs.

- `quick`: a few small tasks, one per kind, for a run of minutes.
- `validation`: held-out configurations of the training families, used to choose checkpoints.
- `validation-long`: held-out configurations of the training families with 4-10x their default
  budgets or a fraction of their data, so that the validation loss flattens or turns up within
  the run (the regimes where a decay pays): checkpoints meant for long training are chosen on it
  too.
- `selection`: where checkpoints and the shipped policy are chosen (with `validation`): tasks of
  families meta-training never samples, whose architectures, losses or data differ from every
  training family: a 2-D convolution + max-pooling + batch-norm classifier of drawn shapes, MLP
  regressions of small synthetic data sets (squared error; Gaussian likelihood), an autoencoder of
  MNIST-1D signals, and embedding classifiers of synthetic token sequences. All their data is made
  by the code (MNIST-1D by its package), none of it from `ood`'s sources.
- `confirm`: six further configurations of the selection families (other depths, widths, data
  sizes, noise and budgets), run for the first time to decide between two candidates after
  both had been read on the suites above (`docs/experiments.md`, "Confirmation: stage 29
  against the shipped policy"); a suite for that one head-to-head, not for choosing snapshots.
- `unseen`: six tasks of the `tabular` family, real data sets measured by people (UCI digits,
  breast cancer, diabetes), unlike every training and selection family, whose data the code
  generates. Fixed before any optimizer ran them, for the head-to-head of two candidates chosen
  on the suites above (`docs/experiments.md`, "Head-to-head on real data neither policy has
  seen"); not for choosing snapshots.
- `unseen2`: six more `tabular` tasks (two data sets `unseen` lacks, UCI wine and iris, and new
  configurations of its others), fixed before any optimizer ran them, for a second
  head-to-head once `unseen` had decided one (`docs/experiments.md`, "Stage 36"); not for
  choosing snapshots.
- `unseen3`: six `tabular` tasks on survey and econometric data no other task uses (ANES 1996,
  Fair's affairs, STAR98, RAND HIE, mode choice, out of the statsmodels wheel), fixed before any
  optimizer ran them, for a third head-to-head (`docs/experiments.md`, "Stage 39"); not for
  choosing snapshots.
- `unseen4`: six `tabular` tasks on measured series and tables no other task uses (sunspots, El
  Nino sea temperatures, Mauna Loa CO2, US macroeconomic quarters, Engel's food budgets,
  Grunfeld's investments, out of the statsmodels wheel), fixed before any optimizer ran them,
  for a fourth head-to-head (`docs/experiments.md`, "Stage 47"); not for choosing snapshots.
- `unseen5`: six byte-level language models (the `texts` family: `charlm`'s GRU, LSTM and
  transformers) trained 1,500 to 3,000 steps on texts no other task reads (Milton's verse and
  prose, the 1911 Britannica's article on Shakespeare), fixed before any optimizer ran them,
  for a fifth head-to-head, of a stage that trains on long language-model runs
  (`docs/experiments.md`, "Stage 48"); not for choosing snapshots.
- `unseen6`: four more `texts` language models in shapes no suite has run (three transformers,
  a GRU), for the decision on CIAO's `lamb_free_below` (`docs/experiments.md`).
- `unseen7`: four byte-level GPT-2-style language models (the `gpt` family: every matrix at
  std 0.02, as Hugging Face's GPT-2 and nanoGPT initialise them) on the `texts` corpora, for the
  decision on CIAO's `lamb_norm_floor` (`docs/experiments.md`).
- `unseen8`: two `tabular` MLPs on survey data, a small-data MLP with layer norm, a deeper
  digits CNN, a two-layer LSTM and a three-layer GPT-2-style decoder, in shapes no suite has
  run, for the decision on stage 51 (`docs/experiments.md`).
- `unseen9`: six more of the three families in shapes no suite has run (wide and deep MLPs
  on the El Nino and CO2 series, a small MLP on the ANES 1996 survey, a wide digits CNN, a
  two-layer LSTM and a wide GPT-2-style decoder), for the decision on stage 52.
- `unseen10`: six more in shapes no suite has run (an MLP with layer norm on the wines, a deep
  MLP on the sunspots, a small digits CNN, a wide LSTM and two small GPT-2-style decoders, one
  with dropout), for the decision on stage 53.
- `unseen11`: six more in shapes no suite has run (a deep narrow and a wide digits CNN, an MLP
  with layer norm on the biopsies, a wide MLP on the travel mode choices, a GRU and a
  one-layer GPT-2-style decoder), for the decision on stage 54.
- `unseen12`: eight byte-level language models in shapes no suite has run (two GRUs, an
  LSTM, two transformers and three GPT-2-style decoders, one with dropout), for the decision
  on the weight decay of biases and norms (`docs/experiments.md`).
- `unseen13`: four byte-level transformers, an LSTM, a GRU and two `tabular` MLPs in shapes no
  suite has run, to confirm the trust ratio's power by a matrix's initial scale
  (`docs/experiments.md`).
- `unseen14`: eight tasks of fewer than 20 passes over their data, in shapes no suite has run
  (two byte-level transformers, a GRU and a GPT-2-style decoder, an MNIST-1D MLP, a digits
  CNN and MLP, and a recurrent adder on fresh data), to confirm the matrices' weight decay by
  the passes over the data (`docs/experiments.md`).
- `unseen15`: eight more of fewer than 20 passes in shapes no suite has run (two byte-level
  transformers, a GPT-2-style decoder, an LSTM, an MNIST-1D CNN and MLP with layer norm, a
  digits CNN, a recurrent XOR on fresh data), the second confirmation of that rule.
- `unseen16`: eight byte-level language models with `nn.Embedding` tables (two GRUs, three
  LSTMs and three transformers) in shapes no suite has run, to confirm the tables' weight
  decay (`docs/experiments.md`).
- `unseen17`: eight `tabular` tasks in shapes no suite has run (MLPs on seven of the data sets,
  three with layer norm, and a digits CNN), read with `confirm4` for the decision on the
  ceiling of the trust ratio's norm (`docs/experiments.md`).
- `unseen18`: eight more `tabular` tasks in shapes no suite has run (MLPs on seven of the data
  sets, three with layer norm, and a thin digits CNN), read with `confirm5` for the decision
  on biases and norms out of the weight decay and on a linear decay (`docs/experiments.md`).
- `unseen19`: eight tasks of the unseen families in shapes no suite has run (three `tabular`
  MLPs, two with layer norm, a digits CNN, a deep LSTM, a deep transformer, a GRU and a
  GPT-2-style decoder), read with `confirm6` for the decision on a training pool with
  factorization tasks.
- `unseen20`: eight more tasks of the unseen families in shapes no suite has run (three
  `tabular` MLPs, one with layer norm, a digits CNN, an LSTM, a transformer, a GRU and a
  GPT-2-style decoder), banked with `confirm7`.
- `confirm2`: eight recommenders (the `recsys` family: four GMFs, four NeuMFs) in shapes and
  on drawn data no suite has run, first read for the weight decay of tables read sparsely,
  then the screen of the rules for recommenders after it (`docs/experiments.md`); not for
  choosing snapshots.
- `confirm3`: eight more recommenders (four GMFs, four NeuMFs) in shapes and on drawn data no
  suite has run, the decision on the fall back to the best state (`docs/experiments.md`).
- `confirm4`: eight more recommenders (four GMFs, four NeuMFs) in shapes and on drawn data no
  suite has run, read for the decision on the ceiling of the trust ratio's norm
  (`docs/experiments.md`).
- `confirm5`: eight more recommenders (four GMFs, four NeuMFs) in shapes and on drawn data no
  suite has run, read with `unseen18` for the same decision.
- `confirm6`: eight more recommenders (four GMFs, four NeuMFs) in shapes and on drawn data no
  suite has run, banked with `unseen19` for the decision on a training pool with factorization
  tasks (`docs/experiments.md`).
- `confirm7`: eight more recommenders (four GMFs, four NeuMFs) in shapes and on drawn data no
  suite has run, banked with `unseen20` for the decision on a continuation weighted to
  factorization tasks (`docs/experiments.md`).
- `confirm8`: eight networks with batch norm in shapes no suite has run (four `shapes` CNNs,
  two MNIST-1D CNNs and two MNIST-1D MLPs with batch norm), banked for the decision on the
  start-over rule under batch norm (`docs/experiments.md`).
- `selection-long`: long runs of the kinds `ood` holds, on data `ood` does not use, where
  the shipped policy is chosen too: collaborative filtering (GMF, NeuMF) of synthetic implicit
  feedback (the `recsys` family) for 2,000-4,000 steps, an embedding CNN over a small token set
  run many epochs, and a transformer LM on the training plays at 5,000 steps.
- `ood`: kinds never used in meta-training or checkpoint selection: byte-level language modelling
  on Shakespeare works that no training task reads (the poems, four held-out plays), a transformer
  LM trained 10x longer than the default distribution's longest LM task (600 steps; stages 5
  and 6 of the shipped policy's meta-training stretched budgets up to 8x), neural
  collaborative filtering on MovieLens 100K (GMF, NeuMF) and speech recognition of synthesised
  digit strings (CTC).
Meta-training never samples a configuration of any suite (`sample_training_config` rejects them,
and the tests check it).
"""

from __future__ import annotations

from lhopt.tasks.base import TaskConfig

Q = TaskConfig.make


def _mlp(data: str, depth: int, width: int, norm: str, train_samples: int, batch: int, budget: int):
    """A `tabular` MLP task."""
    return Q(
        "tabular",
        data=data,
        arch="mlp",
        depth=depth,
        width=width,
        norm=norm,
        train_samples=train_samples,
        batch=batch,
        budget=budget,
    )


def _shapes(blocks: int, width: int, noise: float, train_samples: int, batch: int, budget: int):
    """A `shapes` CNN task (batch norm in every block)."""
    return Q(
        "shapes",
        blocks=blocks,
        width=width,
        noise=noise,
        train_samples=train_samples,
        batch=batch,
        budget=budget,
    )


def _mnist1d_bn(
    arch: str,
    depth: int,
    width: int,
    activation: str,
    dropout: float,
    batch: int,
    train_samples: int,
    budget: int,
):
    """An MNIST-1D classifier with batch norm after each hidden layer."""
    return Q(
        "mnist1d",
        arch=arch,
        depth=depth,
        width=width,
        norm="batch",
        activation=activation,
        dropout=dropout,
        loss="ce",
        batch=batch,
        epochs=3,
        train_samples=train_samples,
        budget=budget,
    )


def _digits_cnn(depth: int, width: int, train_samples: int, batch: int, budget: int):
    """A `tabular` CNN task on the digits."""
    return Q(
        "tabular",
        data="digits",
        arch="cnn",
        depth=depth,
        width=width,
        norm="none",
        train_samples=train_samples,
        batch=batch,
        budget=budget,
    )


_RECSYS_DATA = ("users", "items", "interactions", "rank", "affinity", "popularity", "data_seed")


def _recsys(arch: str, factors: int, batch: int, budget: int, *data: float, **model):
    """A `recsys` config: the model and batch, then its drawn data in `_RECSYS_DATA`'s order."""
    return Q(
        "recsys",
        arch=arch,
        factors=factors,
        batch=batch,
        budget=budget,
        **dict(zip(_RECSYS_DATA, data, strict=True)),
        **model,
    )


def _lm(
    corpus: str,
    arch: str | None,
    layers: int,
    d_model: int,
    context: int,
    batch: int,
    budget: int,
    dropout: float = 0.0,
):
    """A `texts` language-model task of `charlm`'s `arch`, or (arch None) a `gpt` one."""
    return Q(
        "texts" if arch else "gpt",
        corpus=corpus,
        **({"arch": arch} if arch else {}),
        layers=layers,
        d_model=d_model,
        context=context,
        dropout=dropout,
        batch=batch,
        budget=budget,
    )


SUITES: dict[str, dict[str, TaskConfig]] = {
    "quick": {
        "quick-quadratic": Q(
            "quadratic", dim=100, condition=1000.0, noise=0.5, batch=4, budget=300
        ),
        "quick-mnist1d-mlp": Q(
            "mnist1d",
            arch="mlp",
            depth=2,
            width=64,
            norm="none",
            activation="relu",
            dropout=0.0,
            loss="ce",
            batch=64,
            epochs=3,
            budget=300,
        ),
        "quick-xor-gru": Q(
            "algorithmic",
            problem="xor",
            cell="gru",
            layers=1,
            hidden=32,
            dropout=0.0,
            length=8,
            batch=32,
            budget=300,
        ),
    },
    "validation": {
        "val-quadratic-ill": Q(
            "quadratic", dim=500, condition=10000.0, noise=1.0, batch=8, budget=500
        ),
        "val-quadratic-small": Q(
            "quadratic", dim=50, condition=300.0, noise=0.2, batch=1, budget=300
        ),
        "val-addition-lstm": Q(
            "algorithmic",
            problem="addition",
            cell="lstm",
            layers=1,
            hidden=64,
            dropout=0.0,
            length=8,
            batch=64,
            budget=500,
        ),
        "val-xor-rnn2": Q(
            "algorithmic",
            problem="xor",
            cell="rnn",
            layers=2,
            hidden=48,
            dropout=0.1,
            length=12,
            batch=32,
            budget=400,
        ),
        "val-mnist1d-cnn": Q(
            "mnist1d",
            arch="cnn",
            depth=3,
            width=64,
            norm="batch",
            activation="relu",
            dropout=0.1,
            loss="ce",
            batch=128,
            epochs=5,
        ),
        "val-mnist1d-mlp-huber": Q(
            "mnist1d",
            arch="mlp",
            depth=4,
            width=128,
            norm="layer",
            activation="gelu",
            dropout=0.0,
            loss="huber",
            batch=32,
            epochs=2,
        ),
        "val-charlm-gru": Q(
            "charlm",
            arch="gru",
            layers=1,
            d_model=96,
            context=64,
            dropout=0.0,
            batch=32,
            budget=400,
            corpus="plays",
        ),
        "val-charlm-transformer": Q(
            "charlm",
            arch="transformer",
            layers=2,
            d_model=64,
            context=64,
            dropout=0.0,
            batch=32,
            budget=400,
            corpus="plays",
        ),
    },
    "validation-long": {
        "vlong-quadratic-noisy": Q(
            "quadratic", dim=200, condition=3000.0, noise=1.0, batch=4, budget=3000
        ),
        "vlong-xor-lstm": Q(
            "algorithmic",
            problem="xor",
            cell="lstm",
            layers=1,
            hidden=32,
            dropout=0.0,
            length=10,
            batch=32,
            budget=2000,
        ),
        "vlong-mnist1d-mlp-small": Q(
            "mnist1d",
            arch="mlp",
            depth=3,
            width=128,
            norm="none",
            activation="relu",
            dropout=0.0,
            loss="ce",
            batch=64,
            epochs=3,
            train_samples=1000,
            budget=3000,
        ),
        "vlong-mnist1d-cnn-small": Q(
            "mnist1d",
            arch="cnn",
            depth=2,
            width=32,
            norm="batch",
            activation="gelu",
            dropout=0.0,
            loss="ce",
            batch=32,
            epochs=2,
            train_samples=2000,
            budget=3000,
        ),
        "vlong-charlm-gru": Q(
            "charlm",
            arch="gru",
            layers=1,
            d_model=64,
            context=32,
            dropout=0.0,
            batch=16,
            budget=2400,
            corpus="plays",
        ),
    },
    "selection": {
        "sel-shapes-cnn": Q(
            "shapes", blocks=3, width=16, noise=0.2, train_samples=3000, batch=32, budget=1500
        ),
        "sel-friedman-mlp": Q(
            "regression",
            problem="friedman",
            depth=3,
            width=128,
            train_samples=200,
            batch=32,
            budget=2000,
        ),
        "sel-heteroscedastic-nll": Q(
            "regression",
            problem="heteroscedastic",
            depth=2,
            width=64,
            train_samples=256,
            batch=32,
            budget=1500,
        ),
        "sel-mnist1d-autoencoder": Q(
            "autoencoder",
            depth=2,
            width=128,
            code=8,
            noise=0.0,
            train_samples=3000,
            batch=64,
            budget=2000,
        ),
        "sel-tokens-bag": Q(
            "tokens", arch="bag", dim=32, train_samples=2000, batch=32, budget=1500
        ),
        "sel-tokens-cnn": Q(
            "tokens", arch="cnn", dim=32, train_samples=2000, batch=32, budget=1500
        ),
    },
    "confirm": {
        "conf-shapes-cnn": Q(
            "shapes", blocks=2, width=32, noise=0.4, train_samples=1000, batch=64, budget=1000
        ),
        "conf-friedman-deep": Q(
            "regression",
            problem="friedman",
            depth=4,
            width=64,
            train_samples=1000,
            batch=16,
            budget=1500,
        ),
        "conf-heteroscedastic-wide": Q(
            "regression",
            problem="heteroscedastic",
            depth=3,
            width=256,
            train_samples=100,
            batch=16,
            budget=1000,
        ),
        "conf-autoencoder-denoise": Q(
            "autoencoder",
            depth=1,
            width=64,
            code=4,
            noise=0.3,
            train_samples=500,
            batch=32,
            budget=1500,
        ),
        "conf-tokens-bag": Q(
            "tokens", arch="bag", dim=96, train_samples=500, batch=16, budget=1000
        ),
        "conf-tokens-cnn": Q(
            "tokens", arch="cnn", dim=16, train_samples=8000, batch=128, budget=800
        ),
    },
    "unseen": {
        "unseen-digits-mlp": Q(
            "tabular",
            data="digits",
            arch="mlp",
            depth=2,
            width=128,
            norm="none",
            train_samples=997,
            batch=32,
            budget=1500,
        ),
        "unseen-digits-cnn": _digits_cnn(2, 16, 300, 32, 1000),
        "unseen-cancer-mlp": Q(
            "tabular",
            data="cancer",
            arch="mlp",
            depth=2,
            width=64,
            norm="none",
            train_samples=300,
            batch=16,
            budget=800,
        ),
        "unseen-cancer-deep": Q(
            "tabular",
            data="cancer",
            arch="mlp",
            depth=4,
            width=256,
            norm="layer",
            train_samples=100,
            batch=32,
            budget=1500,
        ),
        "unseen-diabetes-mlp": Q(
            "tabular",
            data="diabetes",
            arch="mlp",
            depth=2,
            width=64,
            norm="none",
            train_samples=200,
            batch=16,
            budget=1000,
        ),
        "unseen-diabetes-wide": Q(
            "tabular",
            data="diabetes",
            arch="mlp",
            depth=3,
            width=256,
            norm="layer",
            train_samples=200,
            batch=64,
            budget=2000,
        ),
    },
    "unseen2": {
        "unseen2-wine-mlp": Q(
            "tabular",
            data="wine",
            arch="mlp",
            depth=1,
            width=32,
            norm="none",
            train_samples=100,
            batch=16,
            budget=600,
        ),
        "unseen2-iris-mlp": Q(
            "tabular",
            data="iris",
            arch="mlp",
            depth=2,
            width=64,
            norm="layer",
            train_samples=80,
            batch=8,
            budget=400,
        ),
        "unseen2-digits-ln": Q(
            "tabular",
            data="digits",
            arch="mlp",
            depth=3,
            width=64,
            norm="layer",
            train_samples=500,
            batch=64,
            budget=800,
        ),
        "unseen2-digits-cnn-wide": _digits_cnn(1, 32, 997, 64, 600),
        "unseen2-diabetes-ln": Q(
            "tabular",
            data="diabetes",
            arch="mlp",
            depth=3,
            width=32,
            norm="layer",
            train_samples=200,
            batch=16,
            budget=1200,
        ),
        "unseen2-cancer-small": Q(
            "tabular",
            data="cancer",
            arch="mlp",
            depth=1,
            width=16,
            norm="none",
            train_samples=300,
            batch=64,
            budget=300,
        ),
    },
    "unseen3": {
        "unseen3-anes96-mlp": Q(
            "tabular",
            data="anes96",
            arch="mlp",
            depth=2,
            width=64,
            norm="none",
            train_samples=594,
            batch=32,
            budget=1000,
        ),
        "unseen3-anes96-ln": Q(
            "tabular",
            data="anes96",
            arch="mlp",
            depth=3,
            width=128,
            norm="layer",
            train_samples=300,
            batch=16,
            budget=800,
        ),
        "unseen3-fair-mlp": Q(
            "tabular",
            data="fair",
            arch="mlp",
            depth=2,
            width=128,
            norm="none",
            train_samples=997,
            batch=64,
            budget=1500,
        ),
        "unseen3-star98-mlp": Q(
            "tabular",
            data="star98",
            arch="mlp",
            depth=1,
            width=64,
            norm="none",
            train_samples=193,
            batch=16,
            budget=600,
        ),
        "unseen3-randhie-ln": Q(
            "tabular",
            data="randhie",
            arch="mlp",
            depth=3,
            width=64,
            norm="layer",
            train_samples=997,
            batch=128,
            budget=2000,
        ),
        "unseen3-modechoice-mlp": Q(
            "tabular",
            data="modechoice",
            arch="mlp",
            depth=2,
            width=32,
            norm="none",
            train_samples=130,
            batch=16,
            budget=400,
        ),
    },
    "unseen4": {
        "unseen4-sunspots-mlp": _mlp("sunspots", 2, 64, "none", 198, 16, 800),
        "unseen4-elnino-mlp": _mlp("elnino", 3, 128, "none", 458, 32, 1500),
        "unseen4-co2-ln": _mlp("co2", 2, 64, "layer", 997, 64, 1200),
        "unseen4-macro-mlp": _mlp("macrodata", 2, 32, "none", 130, 16, 500),
        "unseen4-engel-mlp": _mlp("engel", 3, 64, "none", 150, 16, 600),
        "unseen4-grunfeld-ln": _mlp("grunfeld", 2, 128, "layer", 150, 32, 1000),
    },
    "unseen5": {
        "unseen5-paradise-lost-transformer": _lm(
            "paradise-lost", "transformer", 2, 64, 32, 16, 2500
        ),
        "unseen5-paradise-lost-gru": _lm("paradise-lost", "gru", 1, 64, 32, 32, 1500),
        "unseen5-areopagitica-transformer": _lm("areopagitica", "transformer", 2, 64, 32, 16, 3000),
        "unseen5-areopagitica-lstm": _lm("areopagitica", "lstm", 1, 64, 32, 32, 2000, 0.1),
        "unseen5-britannica-transformer": _lm("britannica", "transformer", 2, 48, 32, 16, 2500),
        "unseen5-paradise-regained-transformer": _lm(
            "paradise-regained", "transformer", 1, 64, 32, 32, 1500
        ),
    },
    # The `lamb_free_below` decision (docs/experiments.md): transformers whose positional table
    # starts far below their weights, and a GRU, which has none, on the `texts` corpora in
    # shapes no suite has run; fixed before any optimizer ran them.
    "unseen6": {
        "unseen6-paradise-lost-transformer-deep": _lm(
            "paradise-lost", "transformer", 3, 64, 32, 16, 1500
        ),
        "unseen6-britannica-transformer-wide": _lm(
            "britannica", "transformer", 1, 96, 32, 16, 2000
        ),
        "unseen6-areopagitica-transformer-small": _lm(
            "areopagitica", "transformer", 2, 32, 16, 32, 2500, 0.1
        ),
        "unseen6-paradise-regained-gru": _lm("paradise-regained", "gru", 2, 48, 32, 32, 1500),
    },
    # The `lamb_norm_floor` decision (docs/experiments.md): GPT-2-initialised decoders, whose
    # matrices all start far below PyTorch's default scale; fixed before any optimizer ran them.
    "unseen7": {
        "unseen7-paradise-lost-gpt": _lm("paradise-lost", None, 2, 64, 32, 16, 1500),
        "unseen7-britannica-gpt-wide": _lm("britannica", None, 1, 96, 32, 16, 1000),
        "unseen7-areopagitica-gpt-deep": _lm("areopagitica", None, 3, 48, 32, 16, 1200, 0.1),
        "unseen7-paradise-regained-gpt-small": _lm("paradise-regained", None, 2, 32, 32, 32, 1500),
    },
    # The `hide_val` decision (docs/experiments.md): real data of all three unseen families in
    # shapes no suite has run (small tables that overfit, a CNN, two language models); fixed
    # before any optimizer ran them.
    "unseen8": {
        "unseen8-fair-deep": _mlp("fair", 4, 64, "none", 997, 32, 1200),
        "unseen8-randhie-wide": _mlp("randhie", 2, 256, "none", 997, 64, 1000),
        "unseen8-star98-ln": _mlp("star98", 3, 64, "layer", 193, 16, 800),
        "unseen8-digits-cnn-deep": _digits_cnn(3, 32, 600, 64, 1200),
        "unseen8-britannica-lstm": _lm("britannica", "lstm", 2, 64, 32, 32, 1500),
        "unseen8-paradise-regained-gpt-deep": _lm("paradise-regained", None, 3, 64, 32, 16, 1500),
    },
    # Six more of the three families in shapes no suite has run; fixed before any optimizer ran
    # them.
    "unseen9": {
        "unseen9-elnino-wide-ln": _mlp("elnino", 2, 256, "layer", 458, 64, 1000),
        "unseen9-co2-deep": _mlp("co2", 4, 64, "none", 997, 32, 1500),
        "unseen9-anes96-small": _mlp("anes96", 1, 32, "none", 200, 16, 600),
        "unseen9-digits-cnn-wide": _digits_cnn(2, 64, 400, 32, 800),
        "unseen9-paradise-lost-lstm-deep": _lm("paradise-lost", "lstm", 2, 48, 32, 32, 2000),
        "unseen9-areopagitica-gpt-wide": _lm("areopagitica", None, 2, 96, 32, 16, 1200),
    },
    "unseen10": {
        "unseen10-wine-ln": _mlp("wine", 2, 64, "layer", 100, 8, 500),
        "unseen10-sunspots-deep": _mlp("sunspots", 4, 64, "none", 198, 32, 1000),
        "unseen10-digits-cnn-small": _digits_cnn(1, 16, 200, 16, 600),
        "unseen10-paradise-regained-lstm-wide": _lm(
            "paradise-regained", "lstm", 1, 96, 32, 32, 800
        ),
        "unseen10-britannica-gpt-small": _lm("britannica", None, 2, 48, 32, 32, 800),
        "unseen10-paradise-lost-gpt-dropout": _lm(
            "paradise-lost", None, 1, 64, 16, 16, 1000, dropout=0.1
        ),
    },
    "unseen11": {
        "unseen11-digits-cnn-deep-small": _digits_cnn(3, 16, 300, 16, 1000),
        "unseen11-digits-cnn-all": _digits_cnn(2, 32, 997, 64, 1500),
        "unseen11-cancer-ln": _mlp("cancer", 3, 128, "layer", 300, 32, 800),
        "unseen11-modechoice-wide": _mlp("modechoice", 2, 256, "none", 130, 16, 600),
        "unseen11-britannica-gru": _lm("britannica", "gru", 1, 64, 32, 32, 1200),
        "unseen11-areopagitica-gpt-small": _lm("areopagitica", None, 1, 48, 32, 32, 1000),
    },
    "unseen12": {
        "unseen12-paradise-lost-gru-wide": _lm("paradise-lost", "gru", 1, 96, 32, 32, 1200),
        "unseen12-areopagitica-gru-deep": _lm("areopagitica", "gru", 2, 64, 32, 16, 1200),
        "unseen12-paradise-regained-lstm": _lm("paradise-regained", "lstm", 1, 64, 32, 32, 1500),
        "unseen12-britannica-transformer-small": _lm(
            "britannica", "transformer", 1, 48, 32, 32, 1500
        ),
        "unseen12-paradise-regained-transformer-wide": _lm(
            "paradise-regained", "transformer", 1, 96, 32, 16, 1200
        ),
        "unseen12-paradise-lost-gpt-small": _lm("paradise-lost", None, 1, 48, 32, 32, 1000),
        "unseen12-britannica-gpt-deep": _lm("britannica", None, 3, 48, 32, 16, 1200),
        "unseen12-areopagitica-gpt-dropout": _lm("areopagitica", None, 2, 64, 32, 16, 1500, 0.1),
    },
    "unseen13": {
        "unseen13-paradise-lost-transformer-wide": _lm(
            "paradise-lost", "transformer", 1, 128, 32, 16, 1200
        ),
        "unseen13-britannica-transformer-deep": _lm(
            "britannica", "transformer", 3, 48, 32, 16, 1200
        ),
        "unseen13-areopagitica-transformer-batch": _lm(
            "areopagitica", "transformer", 2, 48, 32, 32, 1000
        ),
        "unseen13-paradise-regained-transformer-dropout": _lm(
            "paradise-regained", "transformer", 2, 64, 32, 16, 1500, 0.1
        ),
        "unseen13-britannica-lstm-wide": _lm("britannica", "lstm", 1, 96, 32, 32, 1200),
        "unseen13-paradise-lost-gru-deep": _lm("paradise-lost", "gru", 2, 48, 32, 16, 1200),
        "unseen13-wine-deep": _mlp("wine", 3, 64, "none", 100, 16, 600),
        "unseen13-diabetes-ln": _mlp("diabetes", 2, 128, "layer", 200, 32, 800),
    },
    "unseen14": {
        "unseen14-areopagitica-transformer": _lm("areopagitica", "transformer", 2, 80, 24, 24, 900),
        "unseen14-paradise-lost-transformer-dropout": _lm(
            "paradise-lost", "transformer", 3, 64, 48, 16, 1000, 0.1
        ),
        "unseen14-paradise-regained-gru": _lm("paradise-regained", "gru", 1, 80, 32, 16, 1000),
        "unseen14-britannica-gpt": _lm("britannica", None, 2, 80, 32, 16, 1000),
        "unseen14-mnist1d-mlp": Q(
            "mnist1d",
            arch="mlp",
            depth=3,
            width=96,
            norm="none",
            activation="relu",
            dropout=0.0,
            loss="ce",
            batch=32,
            epochs=4,
            budget=800,
        ),
        "unseen14-digits-cnn": _digits_cnn(2, 24, 997, 32, 500),
        "unseen14-digits-mlp": _mlp("digits", 2, 192, "none", 997, 16, 600),
        "unseen14-addition-gru": Q(
            "algorithmic",
            problem="addition",
            cell="gru",
            layers=2,
            hidden=48,
            dropout=0.0,
            length=10,
            batch=32,
            budget=1000,
        ),
    },
    "unseen15": {
        "unseen15-britannica-transformer": _lm("britannica", "transformer", 2, 96, 32, 16, 1000),
        "unseen15-areopagitica-gpt-wide": _lm("areopagitica", None, 1, 96, 32, 16, 800),
        "unseen15-paradise-lost-lstm": _lm("paradise-lost", "lstm", 2, 56, 32, 16, 1000),
        "unseen15-paradise-regained-transformer-deep": _lm(
            "paradise-regained", "transformer", 3, 48, 32, 16, 800
        ),
        "unseen15-mnist1d-cnn": Q(
            "mnist1d",
            arch="cnn",
            depth=2,
            width=32,
            norm="none",
            activation="relu",
            dropout=0.0,
            loss="ce",
            batch=64,
            epochs=5,
            budget=600,
        ),
        "unseen15-mnist1d-mlp-ln": Q(
            "mnist1d",
            arch="mlp",
            depth=2,
            width=128,
            norm="layer",
            activation="relu",
            dropout=0.0,
            loss="ce",
            batch=64,
            epochs=2,
            budget=600,
        ),
        "unseen15-digits-cnn-deep": _digits_cnn(3, 16, 997, 16, 800),
        "unseen15-xor-lstm": Q(
            "algorithmic",
            problem="xor",
            cell="lstm",
            layers=1,
            hidden=64,
            dropout=0.0,
            length=12,
            batch=32,
            budget=800,
        ),
    },
    "unseen16": {
        "unseen16-britannica-gru-deep": _lm("britannica", "gru", 3, 72, 32, 16, 900),
        "unseen16-areopagitica-lstm-wide": _lm("areopagitica", "lstm", 1, 112, 24, 16, 900),
        "unseen16-paradise-lost-transformer-wide": _lm(
            "paradise-lost", "transformer", 2, 112, 32, 16, 800
        ),
        "unseen16-paradise-regained-transformer-small": _lm(
            "paradise-regained", "transformer", 1, 40, 48, 24, 1000
        ),
        "unseen16-britannica-lstm": _lm("britannica", "lstm", 2, 72, 40, 16, 1000),
        "unseen16-areopagitica-transformer-deep": _lm(
            "areopagitica", "transformer", 3, 56, 40, 16, 800
        ),
        "unseen16-paradise-lost-gru-small": _lm("paradise-lost", "gru", 1, 40, 32, 24, 1200),
        "unseen16-paradise-regained-lstm-deep": _lm(
            "paradise-regained", "lstm", 3, 64, 32, 16, 900
        ),
    },
    "unseen17": {
        "unseen17-iris-mlp": _mlp("iris", 2, 48, "none", 80, 16, 500),
        "unseen17-fair-wide-ln": _mlp("fair", 2, 192, "layer", 997, 64, 1000),
        "unseen17-randhie-deep": _mlp("randhie", 4, 64, "none", 900, 64, 1200),
        "unseen17-anes96-ln": _mlp("anes96", 3, 96, "layer", 500, 32, 900),
        "unseen17-star98-small": _mlp("star98", 2, 32, "none", 150, 16, 700),
        "unseen17-sunspots-ln": _mlp("sunspots", 3, 96, "layer", 198, 16, 900),
        "unseen17-co2-wide": _mlp("co2", 2, 256, "none", 800, 64, 1000),
        "unseen17-digits-cnn-mid": _digits_cnn(2, 24, 600, 32, 1200),
    },
    "unseen18": {
        "unseen18-wine-deep": _mlp("wine", 4, 48, "none", 100, 16, 800),
        "unseen18-cancer-small": _mlp("cancer", 2, 64, "none", 300, 32, 900),
        "unseen18-diabetes-deep": _mlp("diabetes", 3, 96, "none", 200, 32, 1000),
        "unseen18-modechoice-ln": _mlp("modechoice", 3, 128, "layer", 130, 16, 700),
        "unseen18-engel-ln": _mlp("engel", 2, 96, "layer", 150, 16, 800),
        "unseen18-grunfeld-deep": _mlp("grunfeld", 3, 64, "none", 150, 32, 900),
        "unseen18-elnino-deep-ln": _mlp("elnino", 4, 48, "layer", 458, 64, 1200),
        "unseen18-digits-cnn-thin": _digits_cnn(2, 16, 800, 32, 900),
    },
    "unseen19": {
        "unseen19-wine-ln-wide": _mlp("wine", 2, 160, "layer", 100, 16, 900),
        "unseen19-cancer-deep-thin": _mlp("cancer", 4, 32, "none", 300, 32, 1100),
        "unseen19-diabetes-ln": _mlp("diabetes", 2, 128, "layer", 200, 32, 900),
        "unseen19-digits-cnn-mid": _digits_cnn(3, 24, 900, 64, 1000),
        "unseen19-areopagitica-lstm-deep": _lm("areopagitica", "lstm", 2, 48, 32, 32, 1000),
        "unseen19-paradise-lost-transformer-deep": _lm(
            "paradise-lost", "transformer", 2, 64, 32, 16, 1000
        ),
        "unseen19-britannica-gpt-mid": _lm("britannica", None, 2, 64, 32, 16, 1000),
        "unseen19-paradise-regained-gru-small": _lm("paradise-regained", "gru", 1, 48, 32, 32, 900),
    },
    "unseen20": {
        "unseen20-fair-deep-ln": _mlp("fair", 3, 80, "layer", 997, 32, 1000),
        "unseen20-star98-wide": _mlp("star98", 2, 192, "none", 150, 16, 800),
        "unseen20-sunspots-small": _mlp("sunspots", 2, 48, "none", 198, 16, 700),
        "unseen20-digits-cnn-wide-thin": _digits_cnn(2, 40, 700, 32, 900),
        "unseen20-britannica-lstm-small": _lm("britannica", "lstm", 1, 40, 32, 32, 900),
        "unseen20-areopagitica-transformer-mid": _lm(
            "areopagitica", "transformer", 2, 48, 32, 24, 1000
        ),
        "unseen20-paradise-lost-gru-deep": _lm("paradise-lost", "gru", 2, 40, 32, 24, 1000),
        "unseen20-paradise-regained-gpt-small": _lm("paradise-regained", None, 1, 48, 32, 32, 900),
    },
    "confirm2": {
        "conf2-recsys-gmf-wide": _recsys("gmf", 64, 256, 2500, 800, 2000, 50, 12, 2.5, 0.6, 11),
        "conf2-recsys-gmf-sparse": _recsys("gmf", 24, 128, 2000, 1500, 3000, 15, 6, 1.5, 1.0, 12),
        "conf2-recsys-gmf-flat": _recsys("gmf", 8, 512, 3000, 500, 600, 80, 3, 4.0, 0.2, 13),
        "conf2-recsys-gmf-long": _recsys("gmf", 16, 256, 4000, 300, 500, 30, 4, 2.0, 0.8, 17),
        "conf2-recsys-neumf-deep": _recsys(
            "neumf", 32, 512, 2500, 1200, 1500, 60, 10, 2.0, 0.8, 14, mlp_layers=3
        ),
        "conf2-recsys-neumf-shallow": _recsys(
            "neumf", 16, 256, 2000, 400, 1000, 25, 5, 3.0, 0.8, 15, mlp_layers=1
        ),
        "conf2-recsys-neumf-popular": _recsys(
            "neumf", 12, 384, 1500, 2500, 1200, 40, 8, 1.2, 1.4, 16, mlp_layers=2
        ),
        "conf2-recsys-neumf-wide": _recsys(
            "neumf", 48, 1024, 3000, 1000, 2500, 100, 16, 2.0, 0.5, 18, mlp_layers=2
        ),
    },
    "confirm3": {
        "conf3-recsys-gmf-small": _recsys("gmf", 12, 192, 2500, 600, 900, 35, 5, 2.2, 0.9, 21),
        "conf3-recsys-gmf-big": _recsys("gmf", 40, 768, 2000, 2500, 2200, 50, 14, 1.8, 0.7, 22),
        "conf3-recsys-gmf-skewed": _recsys("gmf", 20, 384, 3000, 900, 1800, 45, 7, 1.0, 1.3, 23),
        "conf3-recsys-gmf-short": _recsys("gmf", 32, 256, 1200, 1000, 1400, 30, 9, 3.5, 0.4, 24),
        "conf3-recsys-neumf-narrow": _recsys(
            "neumf", 8, 256, 3000, 700, 1600, 50, 6, 2.5, 0.8, 25, mlp_layers=3
        ),
        "conf3-recsys-neumf-mid": _recsys(
            "neumf", 24, 512, 2000, 1600, 2000, 70, 12, 1.6, 1.0, 26, mlp_layers=2
        ),
        "conf3-recsys-neumf-few": _recsys(
            "neumf", 16, 128, 2500, 250, 700, 20, 4, 2.8, 0.6, 27, mlp_layers=1
        ),
        "conf3-recsys-neumf-dense": _recsys(
            "neumf", 20, 768, 2500, 1800, 900, 120, 10, 2.0, 0.9, 28, mlp_layers=2
        ),
    },
    "confirm4": {
        "conf4-recsys-gmf-tall": _recsys("gmf", 28, 320, 2200, 1800, 700, 40, 8, 2.4, 0.7, 31),
        "conf4-recsys-gmf-tiny": _recsys("gmf", 10, 128, 3000, 400, 800, 25, 4, 3.0, 1.1, 32),
        "conf4-recsys-gmf-mid": _recsys("gmf", 48, 640, 1800, 1400, 1700, 55, 12, 1.4, 0.5, 33),
        "conf4-recsys-gmf-lazy": _recsys("gmf", 16, 256, 3500, 700, 1100, 65, 6, 1.2, 0.9, 34),
        "conf4-recsys-neumf-tall": _recsys(
            "neumf", 28, 384, 2200, 2000, 800, 45, 9, 2.2, 0.7, 35, mlp_layers=2
        ),
        "conf4-recsys-neumf-thin": _recsys(
            "neumf", 10, 192, 2800, 500, 1300, 30, 5, 2.6, 1.0, 36, mlp_layers=3
        ),
        "conf4-recsys-neumf-rich": _recsys(
            "neumf", 36, 896, 1600, 1300, 1900, 90, 14, 1.7, 0.6, 37, mlp_layers=1
        ),
        "conf4-recsys-neumf-long": _recsys(
            "neumf", 14, 256, 4000, 350, 650, 35, 5, 2.0, 1.2, 38, mlp_layers=2
        ),
    },
    "confirm5": {
        "conf5-recsys-gmf-narrow": _recsys("gmf", 14, 160, 2000, 800, 1200, 35, 6, 2.0, 0.8, 41),
        "conf5-recsys-gmf-heavy": _recsys("gmf", 36, 512, 1600, 2000, 1500, 60, 10, 1.6, 1.0, 42),
        "conf5-recsys-gmf-sharp": _recsys("gmf", 20, 256, 2400, 600, 1000, 40, 5, 3.2, 0.6, 43),
        "conf5-recsys-gmf-cold": _recsys("gmf", 24, 192, 2000, 1200, 2400, 20, 8, 1.8, 1.2, 44),
        "conf5-recsys-neumf-small": _recsys(
            "neumf", 12, 192, 2200, 600, 900, 40, 5, 2.4, 0.9, 45, mlp_layers=2
        ),
        "conf5-recsys-neumf-deep": _recsys(
            "neumf", 20, 384, 1800, 1500, 1200, 55, 8, 2.0, 0.7, 46, mlp_layers=3
        ),
        "conf5-recsys-neumf-flat": _recsys(
            "neumf", 32, 640, 1500, 1100, 1800, 75, 12, 1.3, 0.8, 47, mlp_layers=1
        ),
        "conf5-recsys-neumf-sparse": _recsys(
            "neumf", 16, 256, 2500, 900, 2000, 18, 6, 2.6, 1.1, 48, mlp_layers=2
        ),
    },
    "confirm6": {
        "conf6-recsys-gmf-tiny": _recsys("gmf", 10, 128, 2200, 500, 800, 30, 4, 2.6, 0.7, 51),
        "conf6-recsys-gmf-broad": _recsys("gmf", 48, 640, 1800, 1800, 2600, 45, 12, 1.4, 0.9, 52),
        "conf6-recsys-gmf-dense": _recsys("gmf", 28, 320, 2600, 700, 1100, 90, 7, 2.2, 0.5, 53),
        "conf6-recsys-gmf-tail": _recsys("gmf", 18, 224, 2000, 1400, 2000, 25, 9, 1.9, 1.4, 54),
        "conf6-recsys-neumf-tiny": _recsys(
            "neumf", 10, 160, 2400, 500, 700, 45, 4, 2.8, 0.8, 55, mlp_layers=2
        ),
        "conf6-recsys-neumf-broad": _recsys(
            "neumf", 24, 448, 1600, 1600, 2200, 50, 10, 1.7, 0.9, 56, mlp_layers=3
        ),
        "conf6-recsys-neumf-dense": _recsys(
            "neumf", 16, 320, 2000, 800, 1300, 85, 6, 2.3, 0.6, 57, mlp_layers=1
        ),
        "conf6-recsys-neumf-tail": _recsys(
            "neumf", 28, 512, 2200, 1300, 2400, 22, 11, 1.5, 1.3, 58, mlp_layers=2
        ),
    },
    "confirm7": {
        "conf7-recsys-gmf-small": _recsys("gmf", 14, 192, 2400, 700, 1000, 35, 5, 2.4, 0.8, 61),
        "conf7-recsys-gmf-wide": _recsys("gmf", 40, 512, 1800, 1600, 2300, 50, 11, 1.6, 1.0, 62),
        "conf7-recsys-gmf-dense": _recsys("gmf", 24, 384, 2600, 800, 900, 80, 7, 2.0, 0.6, 63),
        "conf7-recsys-gmf-tail": _recsys("gmf", 20, 256, 2000, 1200, 2200, 22, 8, 1.7, 1.3, 64),
        "conf7-recsys-neumf-small": _recsys(
            "neumf", 12, 192, 2400, 600, 800, 40, 5, 2.5, 0.9, 65, mlp_layers=2
        ),
        "conf7-recsys-neumf-wide": _recsys(
            "neumf", 32, 512, 1600, 1500, 2000, 55, 12, 1.5, 0.8, 66, mlp_layers=1
        ),
        "conf7-recsys-neumf-dense": _recsys(
            "neumf", 18, 320, 2200, 900, 1200, 80, 6, 2.2, 0.7, 67, mlp_layers=3
        ),
        "conf7-recsys-neumf-tail": _recsys(
            "neumf", 24, 448, 2000, 1400, 2500, 25, 10, 1.6, 1.2, 68, mlp_layers=2
        ),
    },
    "confirm8": {
        "conf8-shapes-small": _shapes(2, 12, 0.3, 1000, 32, 1000),
        "conf8-shapes-wide": _shapes(2, 32, 0.15, 4000, 64, 800),
        "conf8-shapes-deep": _shapes(3, 12, 0.4, 2000, 32, 1200),
        "conf8-shapes-noisy": _shapes(1, 24, 0.5, 600, 16, 900),
        "conf8-mnist1d-cnn-bn": _mnist1d_bn("cnn", 2, 48, "relu", 0.05, 64, 3000, 900),
        "conf8-mnist1d-cnn-bn-deep": _mnist1d_bn("cnn", 3, 32, "gelu", 0.0, 32, 1500, 1200),
        "conf8-mnist1d-mlp-bn": _mnist1d_bn("mlp", 3, 96, "relu", 0.1, 64, 2000, 1000),
        "conf8-mnist1d-mlp-bn-wide": _mnist1d_bn("mlp", 2, 256, "tanh", 0.0, 128, 4000, 700),
    },
    "selection-long": {
        "sl-recsys-gmf": Q("recsys", arch="gmf", factors=32, batch=512, budget=3000),
        "sl-recsys-neumf": Q(
            "recsys",
            arch="neumf",
            factors=16,
            mlp_layers=3,
            batch=256,
            budget=3000,
            users=600,
            items=1200,
            interactions=40,
            rank=16,
            data_seed=1,
        ),
        "sl-recsys-gmf-dense": Q(
            "recsys",
            arch="gmf",
            factors=16,
            batch=1024,
            budget=4000,
            users=2000,
            items=1000,
            interactions=100,
            rank=4,
            affinity=3.0,
            popularity=1.2,
            data_seed=2,
        ),
        "sl-recsys-neumf-small": Q(
            "recsys",
            arch="neumf",
            factors=8,
            mlp_layers=2,
            batch=128,
            budget=2000,
            users=300,
            items=800,
            interactions=30,
            rank=8,
            affinity=1.0,
            data_seed=3,
        ),
        "sl-tokens-cnn-long": Q(
            "tokens", arch="cnn", dim=64, train_samples=1000, batch=32, budget=3000
        ),
        "sl-charlm-transformer-long": Q(
            "charlm",
            arch="transformer",
            layers=2,
            d_model=64,
            context=32,
            dropout=0.0,
            batch=16,
            budget=5000,
            corpus="plays",
        ),
    },
    "ood": {
        "ood-poems-transformer": Q(
            "charlm",
            arch="transformer",
            layers=2,
            d_model=64,
            context=64,
            dropout=0.0,
            batch=32,
            budget=400,
            corpus="poems",
        ),
        "ood-heldout-plays-lstm": Q(
            "charlm",
            arch="lstm",
            layers=2,
            d_model=64,
            context=64,
            dropout=0.1,
            batch=32,
            budget=400,
            corpus="heldout",
        ),
        # 6000 steps: 10x the largest LM budget of the default training distribution (600)
        "ood-heldout-lm-long": Q(
            "charlm",
            arch="transformer",
            layers=2,
            d_model=64,
            context=32,
            dropout=0.0,
            batch=16,
            budget=6000,
            corpus="heldout",
        ),
        "ood-ncf-gmf": Q("ncf", arch="gmf", factors=64, batch=1024, budget=4000),
        "ood-ncf-neumf": Q("ncf", arch="neumf", factors=16, mlp_layers=3, batch=512, budget=4000),
        "ood-speech-ds2": Q("speech", channels=8, hidden=64, layers=1, batch=16, budget=800),
    },
}


def suite(name: str) -> dict[str, TaskConfig]:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; valid: {list(SUITES)}")
    return SUITES[name]


def held_out_keys() -> set[str]:
    """Canonical keys of every configuration in any suite: meta-training never samples them."""
    return {c.key() for tasks in SUITES.values() for c in tasks.values()}
