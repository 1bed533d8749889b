"""Data preparation of the out-of-distribution tasks, on small slices: MovieLens for NCF, the
synthesised digit-speech corpus, features, CTC decoding."""

import hashlib

import numpy as np
import pytest
import torch

from lhopt.tasks import TaskConfig, build_task, ncf, speech
from lhopt.tasks.data import CACHE_ENV, DataSource, fetch

# -- MovieLens / NCF ------------------------------------------------------------------------

# (user, item, rating, timestamp), ids from 1: user 1 rated items 1-4, user 2 items 2, 5, 6, 7
TOY = np.array(
    [
        [1, 3, 4, 30],
        [1, 1, 5, 10],
        [1, 2, 3, 20],
        [1, 4, 1, 30],
        [2, 5, 2, 5],
        [2, 2, 4, 1],
        [2, 7, 5, 9],
        [2, 6, 3, 7],
    ]
)


def test_leave_one_out_holds_out_the_latest_interactions_of_each_user():
    split = ncf.leave_one_out(TOY)
    # user 0: times 10, 20, 30, 30 -> ties broken by item: test item 3 (id 4), val item 2 (id 3)
    assert split["test"].tolist() == [[0, 3], [1, 6]]
    assert split["val"].tolist() == [[0, 2], [1, 5]]  # user 1: times 1, 5, 7, 9
    assert sorted(split["train"].tolist()) == [[0, 0], [0, 1], [1, 1], [1, 4]]


def test_leave_one_out_on_the_real_data_is_per_user_and_chronological():
    ratings = ncf.load_ratings()
    assert ratings.shape == (ncf.N_RATINGS, 4)
    split = ncf.leave_one_out(ratings)
    for name in ("val", "test"):  # exactly one held-out item per user
        assert sorted(split[name][:, 0].tolist()) == list(range(ncf.N_USERS))
    assert sum(len(s) for s in split.values()) == ncf.N_RATINGS
    time = {(u - 1, i - 1): t for u, i, _, t in ratings.tolist()}
    latest_train = np.zeros(ncf.N_USERS)
    for u, i in split["train"].tolist():
        latest_train[u] = max(latest_train[u], time[u, i])
    val = {u: time[u, i] for u, i in split["val"].tolist()}
    test = {u: time[u, i] for u, i in split["test"].tolist()}
    assert all(latest_train[u] <= val[u] <= test[u] for u in range(ncf.N_USERS))


def test_negative_sampling_never_samples_a_rated_item():
    rated = ncf.rated_matrix(ncf.load_ratings())
    g = torch.Generator().manual_seed(0)
    users = torch.arange(ncf.N_USERS).repeat(20)
    negs = ncf.sample_negatives(rated, users, 8, g)
    assert negs.shape == (len(users), 8)
    assert not rated[users[:, None].expand_as(negs), negs].any()
    # a user who rated all but three items only ever gets those three
    dense = torch.ones(2, 10, dtype=torch.bool)
    dense[1, [2, 5, 7]] = False
    got = ncf.sample_negatives(dense, torch.ones(300, dtype=torch.long), 4, g)
    assert set(got.flatten().tolist()) == {2, 5, 7}


def test_the_ratings_checksum_rejects_other_data(tmp_path, monkeypatch):
    assert ncf.ratings_digest(TOY) == ncf.ratings_digest(TOY[::-1])  # order does not matter
    text = b"".join(b"\t".join(str(x).encode() for x in row) + b"\n" for row in TOY)
    assert ncf.parse_ratings(b"user\titem\trating\ttime\n" + text, header=True).tolist() == (
        TOY.tolist()
    )
    # a zip with other ratings under the canonical name is refused, and the error names both
    # sources; the (real) fallback is replaced by a package that does not exist
    import zipfile

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with zipfile.ZipFile(tmp_path / "ml-100k.zip", "w") as z:
        z.writestr("ml-100k/u.data", text)
    md5 = hashlib.md5((tmp_path / "ml-100k.zip").read_bytes()).hexdigest()
    monkeypatch.setattr(ncf, "_RATINGS", None)
    toy_zip = DataSource("ml-100k.zip", None, None, None, "toy zip", md5=md5)
    no_wheel = DataSource("w.whl", "0" * 64, None, "no-such-package-lhopt==0.0", "wheel")
    monkeypatch.setattr(ncf, "ML100K_ZIP", toy_zip)
    monkeypatch.setattr(ncf, "RECBOLE_WHEEL", no_wheel)
    assert fetch(ncf.ML100K_ZIP) == tmp_path / "ml-100k.zip"  # an md5-pinned source verifies
    with pytest.raises(ncf.DataUnavailable) as info:
        ncf.load_ratings()
    msg = str(info.value)
    assert "toy zip: the ratings are not the expected ones" in msg and "no-such-package" in msg


def test_ncf_metrics_rank_the_test_item_among_its_negatives():
    task = build_task(TaskConfig.make("ncf", arch="gmf", factors=8, batch=128, budget=40), 0)
    users, items = task.eval_sets["test"]
    assert items.shape == (ncf.N_USERS, 1 + ncf.EVAL_NEGATIVES)
    assert not task.rated[users[:, None].expand(-1, 99), items[:, 1:]].any()  # negatives unrated
    assert task.rated[users, items[:, 0]].all()  # the first column is the held-out positive

    class Oracle(torch.nn.Module):  # scores = minus the column: positive first, or last
        def __init__(self, sign):
            super().__init__()
            self.sign = sign

        def forward(self, u, i):
            col = (i[:, :, None] == items[u[:, 0]][:, None, :]).float().argmax(-1)
            return -self.sign * col.float()

    task.model = Oracle(1.0)
    best = task.test_metrics()
    assert best["hr@10"] == 1.0 and best["ndcg@10"] == pytest.approx(1.0)
    task.model = Oracle(-1.0)  # the positive scores lowest: rank 99
    assert task.test_metrics()["hr@10"] == 0.0


# -- speech -----------------------------------------------------------------------------------


def test_speaker_voices_are_disjoint_between_splits():
    variants = {s: set(v) for s, v in speech.VARIANTS.items()}
    assert not (
        variants["train"] & variants["test"]
        or variants["train"] & variants["val"]
        or variants["val"] & variants["test"]
    )
    for split in ("train", "val", "test"):
        plan = speech.plan_split(split, 200)
        assert plan == speech.plan_split(split, 200)  # fixed seeds
        assert {u.voice.split("+")[1] for u in plan} <= variants[split]
        assert all(3 <= len(u.digits) <= 5 for u in plan)


def test_synthesised_features_have_the_documented_shape():
    engine = speech.ESpeak()
    audio = engine.say("three one four", "en-us+m1", 170, 50)
    assert engine.sample_rate == 22050 and audio.dtype == np.int16
    assert 0.5 < len(audio) / engine.sample_rate < 3.0 and np.abs(audio).max() > 1000
    feats = speech.log_mel(audio.astype(np.float32) / 32768, engine.sample_rate)
    assert feats.shape == (1 + (len(audio) - speech.N_FFT) // speech.HOP, speech.N_MELS)
    assert np.isfinite(feats).all()
    part = speech.synthesise("val", n=4, engine=engine)
    assert part["lengths"].sum() == len(part["frames"]) and part["frames"].shape[1] == 40
    assert part["label_lengths"].sum() == len(part["labels"])
    plan = speech.plan_split("val", 4)
    assert part["labels"].tolist() == [d for u in plan for d in u.digits]
    # the noise is at the planned signal-to-noise ratio
    rng = np.random.default_rng(0)
    clean = audio.astype(np.float32) / 32768
    noisy = speech.add_noise(audio, 10.0, rng)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 10.0) < 0.3


def test_mel_filterbank_covers_the_spectrum():
    fb = speech.mel_filterbank(22050)
    assert fb.shape == (speech.N_MELS, speech.N_FFT // 2 + 1)
    assert (fb >= 0).all() and (fb.max(1) > 0.5).all()  # every filter has a peak
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all()  # in increasing frequency


def test_greedy_ctc_decoding_of_a_known_alignment():
    b = speech.BLANK
    path = [b, 4, 4, b, 4, 2, 2, b, b, 1, 10, 10]  # labels are digit + 1
    log_probs = torch.full((1, len(path) + 3, speech.NUM_LABELS), -10.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    log_probs[0, len(path) :, 5] = 0.0  # frames past the length are ignored
    assert speech.greedy_decode(log_probs, torch.tensor([len(path)])) == [[3, 3, 1, 0, 9]]


def test_edit_distance():
    assert speech.edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert speech.edit_distance([1, 2, 3], [1, 3]) == 1
    assert speech.edit_distance([], [4, 5]) == 2
    assert speech.edit_distance([1, 2, 3, 4], [2, 1, 3, 5]) == 3


def test_deep_speech_2_output_lengths_follow_the_stride():
    model = speech.DeepSpeech2(4, 8, 1)
    x = torch.randn(3, 21, speech.N_MELS)
    lengths = torch.tensor([21, 10, 7])
    log_probs, out_len = model(x, lengths)
    assert out_len.tolist() == [11, 5, 4] and log_probs.shape == (3, 11, speech.NUM_LABELS)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 11))
