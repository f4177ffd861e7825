"""Regenerates crates/shrink-tensor/tests/fixtures/float8_ml_dtypes.txt.

Each line: an f32 input (hex bits) and its ml_dtypes conversion to
float8_e4m3fn, float8_e4m3fnuz, float8_e5m2, float8_e5m2fnuz (hex codes).
ml_dtypes does not saturate, so this is ONNX Cast with saturate=0; the script
also checks onnx's reference helper with saturate=1 against "overflow -> max".
"""
import numpy as np, ml_dtypes, onnx.helper as oh, sys

rng = np.random.default_rng(8)
fmts = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz]
xs = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 448, 464, 465, 480, 500, 240, 248, 57344, 61440, 65536, 1e6, -1e6]
# every finite value of every format, its neighbourhood and the midpoints
for f in fmts:
    v = np.arange(256, dtype=np.uint8).view(f).astype(np.float32)
    v = np.sort(v[np.isfinite(v)])
    mids = (v[:-1].astype(np.float64) + v[1:]) / 2
    xs += list(v) + list(mids) + list(np.nextafter(mids.astype(np.float32), np.float32(np.inf))) + list(np.nextafter(mids.astype(np.float32), np.float32(-np.inf)))
xs += list(rng.standard_normal(600) * np.exp2(rng.uniform(-20, 18, 600)))
xs = np.unique(np.array(xs, dtype=np.float32).view(np.uint32)).view(np.float32)
out = []
bad = 0
for x in xs:
    codes = [int(np.array([x], dtype=np.float32).astype(f).view(np.uint8)[0]) for f in fmts]
    out.append("%08x %02x %02x %02x %02x" % ((int(np.array(x).view(np.uint32)),) + tuple(codes)))
    # onnx reference, saturate=1
    if not np.isnan(x):
        ref = [oh.float32_to_float8e4m3(x, fn=True, uz=False), oh.float32_to_float8e4m3(x, fn=True, uz=True),
               oh.float32_to_float8e5m2(x, fn=False, uz=False), oh.float32_to_float8e5m2(x, fn=True, uz=True)]
        maxc = [0x7E, 0x7F, 0x7B, 0x7F]
        for i, f in enumerate(fmts):
            val = np.array([x], dtype=np.float32).astype(f).astype(np.float32)[0]
            want = codes[i] if np.isfinite(val) else (maxc[i] | (0x80 if x < 0 else 0))
            if ref[i] != want:
                bad += 1
                print("onnx saturate ref differs", f.__name__, x, hex(ref[i]), hex(want), file=sys.stderr)
open(sys.argv[1], "w").write("\n".join(out) + "\n")
print(len(out), "lines;", bad, "onnx saturate mismatches", file=sys.stderr)
