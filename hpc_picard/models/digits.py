"""The trained demo model: a small U-Net score model of scikit-learn's 8x8 digits.

Data: the 1797 bundled ``load_digits`` images (no download), pixel values 0..16
mapped to [-1, 1] by x = p / 8 - 1, flattened to d = 64.

Network: :class:`DigitsUNet`, an epsilon-prediction U-Net (8x8 -> 4x4 -> 2x2 and back,
with skips) conditioned on the project's forward time t through a sinusoidal embedding
of log t. It is trained by ``drivers/train_digits.py`` on the continuous clock (no
discrete schedule), and its weights ship in ``hpc_picard/models/data/digits_unet.pt``
so ``--model digits`` works offline.

Quality (:class:`DigitsQuality`): a scikit-learn MLP classifier trained on the real
digits scores generated ones: its mean top-class probability (confidence), the entropy
of the predicted-class histogram over log 10 (class balance: 1 is uniform), and the
Frechet distance between Gaussian fits of its hidden-layer features on generated and
on real images (lower is better; ``frechet_floor`` is the distance that as many real
digits as there are samples have to the real set, the value sample noise alone gives).
The features are 64-wide: the distance means little for fewer than a few hundred
samples.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .torch_models import NetworkScoreModel, _torch

SIDE = 8
DIM = SIDE * SIDE
WEIGHTS = os.path.join(os.path.dirname(__file__), "data", "digits_unet.pt")
COND_WEIGHTS = os.path.join(os.path.dirname(__file__), "data", "digits_cond_unet.pt")
NUM_CLASSES = 10


def load_real_digits() -> tuple:
    """(images (1797, 64) in [-1, 1], float64; labels (1797,))."""
    from sklearn.datasets import load_digits
    data = load_digits()
    return data.data.astype(np.float64) / 8.0 - 1.0, data.target.astype(np.int64)


def build_network(width: int = 16, num_classes: int = 0):
    """A fresh DigitsUNet (torch imported here, so the module imports without it).

    num_classes > 0 makes it class-conditional: a label embedding with one extra row,
    the null class ``num_classes``, is added to the time embedding; the null class is
    what the network was trained on for dropped labels, its unconditional score.
    """
    torch = _torch()
    nn = torch.nn

    class TimeEmbedding(nn.Module):
        """Sinusoidal features of log t (t: forward time, (B,)) -> (B, 4 width)."""

        def __init__(self, width):
            super().__init__()
            self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(64.0), width // 2)))
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, 4 * width))

        def forward(self, t):
            u = torch.log(t.clamp_min(1e-5))[:, None] / 4.0 * self.freqs[None]
            return self.mlp(torch.cat([torch.sin(u), torch.cos(u)], dim=1))

    class ResBlock(nn.Module):
        def __init__(self, cin, cout, emb):
            super().__init__()
            self.norm1 = nn.GroupNorm(8, cin)
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
            self.time = nn.Linear(emb, cout)
            self.norm2 = nn.GroupNorm(8, cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, e):
            h = self.conv1(torch.nn.functional.silu(self.norm1(x)))
            h = h + self.time(e)[:, :, None, None]
            h = self.conv2(torch.nn.functional.silu(self.norm2(h)))
            return h + self.skip(x)

    class DigitsUNet(nn.Module):
        """eps(x, t, labels): x (B, 1, 8, 8), t (B,) forward time, labels (B,) int64 in
        0..num_classes-1, or -1 / None for none (the null class) -> (B, 1, 8, 8)."""

        sample_shape = (1, SIDE, SIDE)
        prediction = "epsilon"

        def __init__(self, width, num_classes):
            super().__init__()
            w, emb = width, 4 * width
            self.width = width
            self.num_classes = num_classes
            self.embed = TimeEmbedding(w)
            if num_classes:
                self.label_embed = nn.Embedding(num_classes + 1, emb)
            self.conv_in = nn.Conv2d(1, w, 3, padding=1)
            self.down1 = ResBlock(w, w, emb)                          # 8x8
            self.pool1 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)  # -> 4x4
            self.down2 = ResBlock(2 * w, 2 * w, emb)
            self.pool2 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)  # -> 2x2
            self.mid = ResBlock(2 * w, 2 * w, emb)
            self.up2 = ResBlock(4 * w, 2 * w, emb)                    # 4x4, with skip
            self.up1 = ResBlock(3 * w, w, emb)                        # 8x8, with skip
            self.norm_out = nn.GroupNorm(8, w)
            self.conv_out = nn.Conv2d(w, 1, 3, padding=1)

        def forward(self, x, t, labels=None):
            e = self.embed(t)
            if self.num_classes:
                if labels is None:
                    labels = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
                labels = torch.where(labels < 0, self.num_classes, labels)
                e = e + self.label_embed(labels)
            h1 = self.down1(self.conv_in(x), e)
            h2 = self.down2(self.pool1(h1), e)
            h = self.mid(self.pool2(h2), e)
            h = torch.nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = self.up2(torch.cat([h, h2], dim=1), e)
            h = torch.nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = self.up1(torch.cat([h, h1], dim=1), e)
            return self.conv_out(torch.nn.functional.silu(self.norm_out(h)))

    return DigitsUNet(width, num_classes)


def load_network(path: str = WEIGHTS, device: str = "cpu"):
    """The shipped (or a given) DigitsUNet, weights loaded, in eval mode."""
    torch = _torch()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"digits weights {path} are missing: run drivers/train_digits.py")
    state = torch.load(path, map_location=device, weights_only=True)
    width = int(state.pop("width").item()) if "width" in state else 16
    num_classes = int(state.pop("num_classes").item()) if "num_classes" in state else 0
    net = build_network(width, num_classes)
    net.load_state_dict(state)
    return net.to(device).eval()


class DigitsModel(NetworkScoreModel):
    """``--model digits``: the shipped U-Net as a score model (d = 64); ``--model
    digits-cond`` (``conditional=True``): the class-conditional one, labels 0..9."""

    name = "digits"
    image_shape = (SIDE, SIDE)
    #: fixed by the network; known before its weights load (dry runs, --dim checks)
    dim = DIM

    def __init__(self, device: str = "cpu", max_batch: int = 0, weights: str | None = None,
                 conditional: bool = False):
        weights = weights or (COND_WEIGHTS if conditional else WEIGHTS)
        net = load_network(weights, device)
        super().__init__(net, net.sample_shape, prediction="epsilon", device=device,
                         max_batch=max_batch, name="digits-cond" if net.num_classes else "digits",
                         num_classes=net.num_classes)
        self.weights = weights

    def parameters(self) -> dict:
        return {**super().parameters(), "weights": os.path.basename(self.weights)}

    def accuracy(self, samples, t, seed, labels=None):
        """Quality figures of generated digits (see :class:`DigitsQuality`)."""
        return DigitsQuality.shared().evaluate(samples, labels)


class DigitsQuality:
    """Classifier-based quality figures for 8x8 digit images in [-1, 1] (B, 64)."""

    _shared = None

    def __init__(self, seed: int = 0):
        import warnings
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        from threadpoolctl import threadpool_limits
        images, labels = load_real_digits()
        self.real = images
        # Full-batch L-BFGS on one BLAS thread: seconds, where the default Adam with
        # a thread pool fighting torch's took half a minute. alpha = 1 keeps it
        # calibrated: on held-out digits (fit on 1400) its mean confidence is 0.95 at
        # 93% accuracy, where alpha = 1e-4 claims 0.99 at 92%. Stopping at max_iter is
        # part of the fixed recipe.
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.classifier = MLPClassifier(hidden_layer_sizes=(64,), solver="lbfgs", max_iter=300,
                                            alpha=1.0, random_state=seed).fit(images, labels)
        self.real_features = self.features(images)
        self.real_mean = self.real_features.mean(axis=0)
        self.real_cov = np.cov(self.real_features, rowvar=False)
        self.seed = seed
        self._floors = {}

    def floor(self, num: int) -> float:
        """The Frechet distance that ``num`` real digits (drawn without replacement,
        fixed seed) have to the whole real set: what sample noise alone gives."""
        if num not in self._floors:
            pick = np.random.default_rng(self.seed).permutation(len(self.real))[:num]
            self._floors[num] = frechet_distance(self.real_features[pick], mean=self.real_mean,
                                                 cov=self.real_cov)
        return self._floors[num]

    @classmethod
    def shared(cls) -> "DigitsQuality":
        """One instance per process: training the classifier takes a second or two."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def features(self, images) -> np.ndarray:
        """The classifier's hidden ReLU activations, (B, 64)."""
        clf = self.classifier
        return np.maximum(np.asarray(images, dtype=np.float64) @ clf.coefs_[0] + clf.intercepts_[0], 0.0)

    def evaluate(self, samples, labels=None) -> dict:
        """The figures (class docstring); with the labels the samples were asked for,
        also label_accuracy (the fraction the classifier assigns to its label) and
        label_accuracy_per_class (NaN for a label no sample asked for)."""
        x = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
        prob = self.classifier.predict_proba(x)
        predicted = prob.argmax(axis=1)
        counts = np.bincount(predicted, minlength=10)
        freq = counts / counts.sum()
        nz = freq[freq > 0]
        feats = self.features(x)
        extra = {}
        if labels is not None:
            labels = np.asarray(labels)
            hit = predicted == labels
            extra = {"label_accuracy": float(hit.mean()),
                     "label_accuracy_per_class": np.array(
                         [hit[labels == c].mean() if (labels == c).any() else np.nan
                          for c in range(NUM_CLASSES)])}
        return {
            **extra,
            "classifier_confidence": float(prob.max(axis=1).mean()),
            "class_balance": float(-(nz * np.log(nz)).sum() / np.log(10)),
            "frechet_distance": float(frechet_distance(feats, mean=self.real_mean, cov=self.real_cov)),
            "frechet_floor": float(self.floor(min(len(x), len(self.real)))),
            "class_counts": counts.astype(np.int64),
        }


def frechet_distance(a, b=None, mean=None, cov=None) -> float:
    """Frechet distance between Gaussian fits of feature sets a (n, f) and b (or the
    given mean/cov): |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^{1/2})."""
    mu_a, cov_a = a.mean(axis=0), np.cov(a, rowvar=False)
    if b is not None:
        mean, cov = b.mean(axis=0), np.cov(b, rowvar=False)
    # tr (C_a C_b)^{1/2} = sum of sqrt eigenvalues of C_a^{1/2} C_b C_a^{1/2}, which is
    # symmetric PSD: stable where dead ReLU units make the covariances singular.
    w, v = np.linalg.eigh(cov_a)
    half = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(half @ cov @ half), 0.0, None)).sum()
    return float(((mu_a - mean) ** 2).sum() + np.trace(cov_a) + np.trace(cov) - 2.0 * root_trace)


# -- images ----------------------------------------------------------------------------
def image_grid(samples, side: int | tuple, scale: int = 4, columns: int | None = None,
               low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Tile samples (B, h*w) into one uint8 image, each upscaled ``scale`` times, with
    one-pixel mid-grey gaps; values are mapped from [low, high] to [0, 255] (clipped)."""
    h, w = (side, side) if isinstance(side, int) else side
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, h, w)
    n = len(samples)
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    cell_h, cell_w = h * scale + 1, w * scale + 1
    grid = np.full((rows * cell_h + 1, columns * cell_w + 1), 128, dtype=np.uint8)
    pixels = np.clip((samples - low) / (high - low), 0.0, 1.0)
    pixels = np.rint(pixels * 255).astype(np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, columns)
        big = np.kron(img, np.ones((scale, scale), dtype=np.uint8))
        grid[1 + r * cell_h: 1 + r * cell_h + h * scale, 1 + c * cell_w: 1 + c * cell_w + w * scale] = big
    return grid


def write_png(path: str, image: np.ndarray):
    """Write a 2-D uint8 array as an 8-bit greyscale PNG (zlib only, no imaging library)."""
    import struct
    import zlib
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as fh:
        fh.write(png)


def read_png(path: str) -> np.ndarray:
    """Read back a greyscale PNG written by :func:`write_png` (for tests): (h, w) uint8."""
    import struct
    import zlib
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width + 1)
    return raw[:, 1:].copy()
