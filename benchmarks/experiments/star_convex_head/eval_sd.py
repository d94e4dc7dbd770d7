import sys, time, numpy as np, torch
sys.path.insert(0, __import__("os").path.dirname(__file__))
from sd_common import *
from skimage.draw import polygon as draw_polygon
from skimage.segmentation import watershed
from napari_microseg.evaluation.metrics import evaluate_dataset
from napari_microseg.inference.postprocess import fill_mask_holes, filter_labels, drop_unsure_objects
torch.set_num_threads(2)
FE = Path("/tmp/star_convex_feats")

def nms(prob, rays, pthr=0.5, iou_thr=0.4, stride=1, skip_covered_centres=False):
    """Greedy StarDist-style NMS; skip_covered_centres also drops a candidate whose centre lies in an accepted polygon."""
    h, w = prob.shape
    m = np.zeros_like(prob, bool); m[::stride, ::stride] = True
    ys, xs = np.nonzero((prob > pthr) & m)
    order = np.argsort(-prob[ys, xs], kind="stable")
    canvas = np.zeros((h, w), np.int32); areas = [0]; polys = []
    for c in order:
        y, x = ys[c], xs[c]
        if skip_covered_centres and canvas[y, x]: continue
        d = rays[:, y, x]
        rr, cc = draw_polygon(y + d * DY, x + d * DX, (h, w))
        if len(rr) == 0: continue
        own = canvas[rr, cc]
        ok = True
        if own.any():
            u, cnt = np.unique(own[own > 0], return_counts=True)
            ar = np.asarray(areas)[u]
            iou = cnt / (len(rr) + ar - cnt)
            # also suppress when mostly contained
            if iou.max() > iou_thr or (cnt / len(rr)).max() > 0.7: ok = False
        if ok:
            polys.append((y, x, rr, cc)); areas.append(len(rr))
            sel = own == 0
            canvas[rr[sel], cc[sel]] = len(polys)
    return polys

def labels_pure(polys, shape):
    lab = np.zeros(shape, np.int32)
    for i in range(len(polys) - 1, -1, -1):
        y, x, rr, cc = polys[i]; lab[rr, cc] = i + 1
    return filter_labels(lab, 8, None, False)

def labels_hybrid(polys, probs):
    p_bg, p_in, dist = probs[0], probs[1], probs[3]
    mask = fill_mask_holes(p_bg < 0.5)
    markers = np.zeros(mask.shape, np.int32)
    for i, (y, x, rr, cc) in enumerate(polys):
        if mask[y, x]: markers[y, x] = i + 1
    lab = watershed(-dist.astype(np.float32), markers=markers, mask=mask)
    orphans = mask & (lab == 0)
    if orphans.any():
        extra, _ = ndi.label(orphans, structure=np.ones((3, 3), bool))
        lab = np.where(orphans, extra + lab.max(), lab)
    lab = drop_unsure_objects(lab, p_in, 0.4)
    return filter_labels(lab, 8, None, False)

if __name__ == "__main__":
    from train_head import head
    split = int(sys.argv[1]); pthr = float(sys.argv[2]); iou_thr = float(sys.argv[3])
    import os; skip = os.environ.get("SKIP_COVERED") == "1"
    net = head(); net.load_state_dict(torch.load(sys.argv[4] if len(sys.argv) > 4 else "/tmp/star_convex_head.pt")); net.eval()
    res = {"pure": [], "hybrid": []}
    t = time.time()
    for n in names({split}):
        f = np.load(FE / (n + ".feat.npy")); p = np.load(FE / (n + ".prob.npy"))
        with torch.inference_mode():
            out = net(torch.from_numpy(np.concatenate([f, p]).astype(np.float32))[None])[0].numpy()
        prob = 1 / (1 + np.exp(-out[0])); rays = np.maximum(out[1:], 0.5)
        _, gt = read(n)
        polys = nms(prob, rays, pthr, iou_thr, stride=1 if gt.size < 300000 else 2, skip_covered_centres=skip)
        res["pure"].append((n, gt, labels_pure(polys, gt.shape)))
        res["hybrid"].append((n, gt, labels_hybrid(polys, p.astype(np.float32))))
    for k, v in res.items():
        per, pooled = evaluate_dataset(iter(v))
        print(sys.argv[1:4], "skip_covered" if skip else "plain", k, {q: round(float(pooled[q]), 4) for q in ("ap@0.50", "f1@0.50", "ap@0.75")}, round(time.time() - t), flush=True)
