import sys, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, __import__("os").path.dirname(__file__))
from sd_common import *
torch.set_num_threads(2); torch.manual_seed(0)
FE = Path("/tmp/star_convex_feats")
items = []
for n in names({2, 3, 4}):
    f = np.load(FE / (n + ".feat.npy")); p = np.load(FE / (n + ".prob.npy"))
    items.append((np.concatenate([f, p]), np.load(FE / (n + ".rays.npy")), np.load(FE / (n + ".op.npy"))))
print("items", len(items), flush=True)
def head():
    return nn.Sequential(nn.Conv2d(36, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 1 + N_RAYS, 1))
if __name__ == "__main__":
    P = int(sys.argv[2]) if len(sys.argv) > 2 else 96
    iters = int(sys.argv[1])
    net = head()
    with torch.no_grad(): net[-1].bias[1:] = 5.0
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    rng = np.random.default_rng(0)
    t = time.time(); run = []
    for it in range(iters):
        xs, rs, ops = [], [], []
        for _ in range(16):
            f, r, o = items[rng.integers(len(items))]
            h, w = o.shape
            y0 = rng.integers(0, max(1, h - P + 1)); x0 = rng.integers(0, max(1, w - P + 1))
            sl = (slice(y0, y0 + P), slice(x0, x0 + P))
            pad = lambda a: np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, P - a.shape[-2]), (0, P - a.shape[-1])])
            xs.append(pad(f[(slice(None),) + sl])); rs.append(pad(r[(slice(None),) + sl])); ops.append(pad(o[sl]))
        x = torch.from_numpy(np.stack(xs).astype(np.float32)); r = torch.from_numpy(np.stack(rs).astype(np.float32))
        o = torch.from_numpy(np.stack(ops).astype(np.float32))
        out = net(x)
        lp = F.binary_cross_entropy_with_logits(out[:, 0], o)
        ld = ((out[:, 1:] - r).abs() * o[:, None]).mean() / (o.mean() + 1e-6) / 32 * 32
        loss = lp + 0.2 * ld
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        run.append((lp.item(), ld.item()))
        if it % 100 == 0 or it == iters - 1:
            a = np.mean(run[-100:], 0); print(it, round(time.time() - t), "bce %.4f L1px %.3f" % tuple(a), flush=True)
    torch.save(net.state_dict(), "/tmp/star_convex_head.pt")
