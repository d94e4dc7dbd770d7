"""Star-convex head experiment on frozen v7 features (scratch, not product code)."""
import numpy as np, tifffile, torch
from pathlib import Path
from scipy import ndimage as ndi
DATA = Path("/work/shared/data/dsb2018")
N_RAYS = 32
ANG = np.arange(N_RAYS) * 2 * np.pi / N_RAYS
DY, DX = np.sin(ANG), np.cos(ANG)

def names(split_mods):
    ns = sorted(p.name for p in (DATA / "images").glob("*.tif"))
    return [n for i, n in enumerate(ns) if i % 5 in split_mods]

def read(n):
    img = tifffile.imread(DATA / "images" / n)
    if img.ndim == 3: img = img[..., :3].mean(-1)
    return img.astype(np.float32), tifffile.imread(DATA / "labels" / n)

def star_dist(lab, n_rays=N_RAYS):
    """(n_rays, H, W) float32 px distance from each fg pixel to its object's edge along each ray."""
    h, w = lab.shape
    ys, xs = np.nonzero(lab)
    own = lab[ys, xs]
    out = np.zeros((n_rays, h, w), np.float32)
    for k in range(n_rays):
        dy, dx = DY[k], DX[k]
        d = np.zeros(len(ys), np.float32)
        active = np.arange(len(ys))
        r = 0
        while len(active):
            r += 1
            yy = np.rint(ys[active] + r * dy).astype(np.int64); xx = np.rint(xs[active] + r * dx).astype(np.int64)
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            same = np.zeros(len(active), bool)
            same[inside] = lab[yy[inside], xx[inside]] == own[active[inside]]
            done = active[~same]
            d[done] = r  # stepped out at r: edge between r-1 and r; StarDist uses subpixel; ok
            active = active[same]
        out[k, ys, xs] = d
    return out

def obj_prob(lab):
    """normalized edt per object (0..1), StarDist's object probability target."""
    out = np.zeros(lab.shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(lab), 1):
        if sl is None: continue
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        m = lab[sl] == i
        d = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        if d.max() > 0: out[sl][m] = (d / d.max())[m]
    return out

class Extractor:
    def __init__(self):
        from napari_microseg.io.models import load_model
        from napari_microseg.inference.segment import make_band_transform
        self.loaded = load_model("nuclei_fluorescence")
        self.net = self.loaded.model.eval()
        self.mbt = make_band_transform
        self._feat = None
        self.net.head.register_forward_pre_hook(lambda m, a: setattr(self, "_feat", a[0]))
    @torch.inference_mode()
    def __call__(self, img):
        spec = self.loaded.config.get("normalization")
        tr, _ = self.mbt(img, spec)
        x = torch.from_numpy(tr(img, 0))[None, None]
        logits = self.net(x)
        h, w = img.shape
        from napari_microseg.training.predict import logits_to_probabilities
        probs = logits_to_probabilities(logits, "three_class", True)[0].numpy()
        feat = self._feat[0, :, :h, :w].numpy()
        return feat, probs
