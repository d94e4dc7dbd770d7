import sys, json, time, numpy as np, tifffile, torch
from pathlib import Path
from napari_microseg.evaluation.metrics import evaluate_dataset
from napari_microseg.inference.segment import segment, make_predict_fn, flip_averaged
from napari_microseg.inference.scale import rescaled_predict_fn
from napari_microseg.io.models import load_model
torch.set_num_threads(2)
data = Path("/work/shared/data/dsb2018")
split = int(sys.argv[1]); scales = [float(s) for s in sys.argv[2].split(",")]
names = [n for i, n in enumerate(sorted(p.name for p in (data/"images").glob("*.tif"))) if i % 5 == split]
loaded = load_model("nuclei_fluorescence")
base = make_predict_fn(loaded)
fns = [rescaled_predict_fn(base, s) for s in scales]
def fn(batch):
    return sum(f(batch) for f in fns) / len(fns)
def pairs():
    for n in names:
        img = tifffile.imread(data/"images"/n)
        if img.ndim == 3: img = img[..., :3].mean(-1)
        gt = tifffile.imread(data/"labels"/n)
        res = segment(loaded, img, measure=False, predict_fn=fn)
        yield n, gt, np.asarray(res.labels)
t=time.time()
per, pooled = evaluate_dataset(pairs())
print(sys.argv[1:], {k: round(pooled[k],4) for k in ("ap@0.50","f1@0.50")}, round(time.time()-t,1))
