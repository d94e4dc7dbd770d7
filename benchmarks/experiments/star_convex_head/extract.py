import sys, time, numpy as np, torch
sys.path.insert(0, __import__("os").path.dirname(__file__))
from sd_common import *
torch.set_num_threads(2)
ex = Extractor()
out = Path("/tmp/star_convex_feats"); out.mkdir(exist_ok=True)
t = time.time()
for i, n in enumerate(names({0, 1, 2, 3, 4})):
    img, lab = read(n)
    feat, probs = ex(img)
    np.save(out / (n + ".feat.npy"), feat.astype(np.float16))
    np.save(out / (n + ".prob.npy"), probs.astype(np.float16))
    if i % 5 != 0 and i % 5 != 1:  # training split for the head
        np.save(out / (n + ".rays.npy"), star_dist(lab).astype(np.float16))
        np.save(out / (n + ".op.npy"), obj_prob(lab).astype(np.float16))
    if i % 50 == 0: print(i, n, img.shape, round(time.time() - t, 1), flush=True)
print("done", time.time() - t)
