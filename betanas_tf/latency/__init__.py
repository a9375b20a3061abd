"""Latency lookup tables: build (host LiteRT, a phone or a GPU), import ProxylessNAS YAML, predict,
validate, compare.

    python -m betanas_tf.latency build --space=proxyless_mobile --out=host_cpu.json [--threads=1] [--android]
    python -m betanas_tf.latency build --space=proxyless_mobile --quantize=int8 --threads=4 \
        [--delegate=none] [--android [--use_gpu]] --out=host_int8_4t.json
    python -m betanas_tf.latency build --space=proxyless_mobile --quantize=int8 --evict_mb=0 --out=host_int8_hot.json
    python -m betanas_tf.latency build --space=proxyless_mobile --target=gpu --batch_size=8 --out=gpu.json
    python -m betanas_tf.latency refit --lut=host_int8_4t.json --space=proxyless_mobile
    python -m betanas_tf.latency import --yaml=pixel1_latency_proxyless.yaml --out=pixel1.json
    python -m betanas_tf.latency predict --lut=host_cpu.json --arch=arch.json
    python -m betanas_tf.latency validate --lut=host_cpu.json --space=proxyless_mobile --n=50 \
        [--report=validation.json]
    python -m betanas_tf.latency compare --lut=host_cpu.json --other=pixel1.json --n=100

A table times one runtime (`runtime.Runtime`: number format, threads, delegate) and records it
in its target; `validate` times what the table describes (a flag that says otherwise is an
error), and `compare` says how far two runtimes' tables agree.


Modules: `table` (keys, format, prediction), `runtime` (what a table describes: format,
threads, delegate), `timers` and `timing` (what times the models, and how on a noisy
machine), `android` (benchmark_model over adb), `measure` (building with anchors,
validation), `compare` (two tables side by side); `python -m betanas_tf.latency` is the CLI.

A shared machine changes speed by several per cent over minutes (measured here: 12 %
between the chunks of one build, 13 % for a small network between build and validation),
and not by the same factor for every network (in that second case the networks of
2-10x the small one's cost slowed by 7 %). So every timing call of `build` and `validate`
also times three fixed whole networks of the space, the *anchors* (`anchor_choices`: the
cheapest, median and most expensive candidate of every block), interleaved with the rest.
An entry keeps the anchors' times of its own call (`anchor_ms`) and is read at the
reference speed (each anchor's median over the build): times the geometric mean of the
anchors' reference / call ratios. A whole network timed in another call (calibration,
validation) is compared at the reference speed through the *drift curve* of that call:
the anchors' now / reference ratios interpolated over the logarithm of the network's
layer sum (`LatencyTable.drift`). `validate` reports the error against what it measured,
and also with the prediction moved along a drift curve (the table at the machine's speed
during validation), which separates what the table gets wrong from what the machine did
meanwhile. Three anchors place that curve only to 1-2 % (one noisy sample each), so the
table keeps its calibration networks and `validate` re-times `--drift_networks` of them
(spread over their range) with the validation networks: the curve is then the
least-squares line of their now / at-build ratios over log(layer sum)
(`fitting.calibration_drift`), on the very scale the correction was fitted to, joined
beyond their range to the cheapest / dearest anchor's ratio.

The correction is fitted with the entries read as the median of their samples and as their
10th percentile, and the table keeps the statistic that predicts its calibration networks
better left-one-out (`measure.fit_calibration`; `refit` redoes it on a built table).

A host build times the one-layer models cold: N MiB of memory are written before each of
their timed calls (`timing.CacheEvictor`; `--evict_mb`, default `timing.default_evict_mb`:
twice the largest CPU cache; 0 times them hot), while the anchors and networks are timed
hot. Called ten times in a row, a layer keeps its weights and XNNPACK's buffers in the
caches, and how much that flatters it differs from layer to layer (docs/latency.md).
"""
