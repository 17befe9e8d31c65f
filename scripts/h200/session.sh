#!/usr/bin/env bash
# The H200 session that backs the TensorRT 8.6 claims (issues 7, 10, 12, 13), as it was run.
#
# Before: ../shared/hooks/trt86/stage (TensorRT 8.6), scripts/h200/wheels.sh (pydantic, Polygraphy, adjustText),
# and `mkdir -p .stage/trt86inc && cp ../shared/hooks/trt86/include/* .stage/trt86inc/` (plugin headers).
# Carry ".stage/trt86inc" and ".whl" on EVERY call: ignored paths that a call does not carry are removed there.
# A call sends at most 64 MiB (working tree + carried paths): with the repository over ~6 MB the hook's 58 MB parts
# no longer fit; re-split them smaller (2026-11-30, seventh session: 50 MB parts, nine calls, the same unpack.sh):
#   cat .stage/trt86/0*/part.* > /tmp/all && (cd /tmp && split -b 50M -d -a 2 all part.) && for f in /tmp/part.*;
#   do i=${f##*.}; mkdir -p .stage/trt86t/$i && mv $f .stage/trt86t/$i/; done; cp .stage/trt86/00/{zstd,sha} .stage/trt86t/00/;
#   cp .stage/trt86/07/unpack.sh .stage/trt86t/08/   (call NN carries .stage/trt86t/NN and copies it to /root/trt86;
#   the last one also runs unpack.sh; part 00 + the tree must stay < 64 MiB)
# On the device, after the staging calls unpacked TensorRT 8.6 to /root/site, every call is
#   export PYTHONPATH=/root/site; bash scripts/h200/session.sh STEP [ARGS]
# Never `pkill -f`/`pgrep -f` a bare word that the calling command line also contains: it matches that call (or
# the bg wrapper) itself; on 2026-11-29 that ended a device call and the machine was given back. Anchor it ('^python3 ...').
# Long steps run in the background (setsid) and log to /root/logs/STEP.log; `status` prints their tails.
#   setup                 install the project and the carried wheels (.whl/), print versions
#   tests                 GPU tests: plugin kernels, tiny engines vs eager (every layout), large activations
#   probe CONFIG...       scripts/bench_build.py in parallel (per-block build cost of 7B-shaped models)
#   knobs CONFIG...       scripts/probe_trt_build.py in parallel (one builder knob at a time: what is slow)
#   baseline GPU          7B models on eager (scripts/bench_trt.py), then compiled (scripts/bench_compiled.py)
#   par NODEID...         each pytest node id as its own process, side by side (GPUs alternate); logs t-N.log
#   verify                the checks left open on 2026-11-29: every GPU test side by side (par), and full llama-7b
#                         builds at the default opt level and at 0 (knobs), for the 5-minute target
#   day3                  2026-11-29 (third session): every GPU test on GPU 0; the 7B engines (portable at opt level 0,
#                         plugin with CUDA graphs) built side by side, then timed one at a time per GPU (--lock);
#                         eager on GPU 0 once the tests are done
#   day4                  2026-11-30: the weights-inputs tiny engines vs eager (GPU 0), the three 7B models built with
#                         --weights inputs in both layouts side by side (6 builds) and timed one at a time per GPU
#                         (--lock), compiled depth-27 on GPU 0, eager (timings + reference tokens) after the builds
#   day5                  next: portable 7B engines each alone on a GPU (llama-7b, then depth-27 with its timing cache),
#                         the llama-7b plugin engine over the whole sweep with its layer profile (not yet run)
#   day6                  2026-11-30 (fifth session): the cuBLASLt GEMM plugin: its GPU tests and the tiny plugin engines
#                         vs eager (GPU 0); the three 7B plugin engines with --gemm plugin built side by side and timed
#                         one at a time on GPU 1, then llama-7b's layer profile; portable llama-7b then depth-27 (the
#                         family's timing cache) built and timed with GPU 0 to themselves
#   day6b                 the same day, second lease (the first machine was given back while idle): the GEMM plugin
#                         with unaligned-address staging, its tests and the three 7B plugin engines again on GPU 1
#                         (llama-7b's layer profile at batch 1 and 16), every GPU test (pytest -n 6) on GPU 0
#   day7                  next (not yet run): the family's timing cache filled by llama-7b cut to 2 blocks (GPU 0), then
#                         the three 7B plugin engines built with it side by side and each timed with no build beside it
#                         (--lock: builds shared, timings exclusive) on GPU 1, llama-7b's layer profile (--warmup);
#                         compiled llama-7b on GPU 0 once the builds are done (its earlier run shared the host with builds)
#   day8                  branch wip/rmsnorm-plugin (not yet run): the RMSNorm plugin's kernel tests and the tiny plugin
#                         engines, then llama-7b with --norm plugin and --norm trt, built side by side, timed in turn
#                         (both also gather the embedding from the fp16 input, the branch's other change)
#   day9                  2026-11-30 (sixth session), as run from branch wip/day9 (main + wip/rmsnorm-plugin + wip/gemv): the
#                         RMSNorm plugin's and GEMM plugin's GPU tests (decode GEMV on and off) and the tiny plugin engines
#                         (GPU 0); the family's timing cache from llama-7b cut to 2 blocks (TensorRT 8.6 rejected it in the
#                         other builds: "Myelin error from unknown graph ... The timing cache will not be used"); the
#                         three 7B engines side by side on GPU 1, each timed with no build beside it; eager, compiled and
#                         the engine in one run per model once the builds are done
#   day9b                 the same lease, 3 minutes in: the decode GEMV measured slower than cuBLASLt, so the 7B builds and
#                         timings restarted with TRTLLM_KIT_GEMV=0 (GEMV on for llama-7b only as an A/B), without the
#                         rejected cache (the machine was later given back while idle; compiled did not finish)
#   day9c                 second lease, no TensorRT staged: compiled (and eager) for llama-7b (GPU 0) and depth-27 (GPU 1)
#   day10                 the same day, third lease (one GPU, GPU=0), as run from branch wip/norm-type: the RMSNorm
#                         plugin pinned to one type through a plugin field, its GPU tests, the tiny plugin engines with a
#                         check that no reformat sits next to a norm, and llama-7b cut to 2 blocks: 36 reformats, 15 of
#                         them next to its 10 norms; the pin did not remove them (not landed)
#   day11                 not run (day12 took its place), branch wip/rotary-plugin: the rotary plugin's kernel tests, the RMSNorm
#                         tests and the tiny plugin engines (GPU 0); the three 7B engines with --rope plugin (the default
#                         there) and llama-7b with --rope trt for the A/B, built side by side and each timed alone on
#                         GPU 1, then llama-7b's layer profile (about 12 device minutes after staging); and llama-7b
#                         cut to 2 blocks built with TensorRT's verbose log (GPU 0): the formats around the norms
#   day12                 2026-11-30 (seventh session), branch wip/day11 (wip/rotary-plugin + the RMSNorm plugin in the
#                         portable layout): GPU 0: the rotary and norm kernel tests, the tiny plugin engines and the tiny
#                         portable engines with --norm plugin vs eager; portable llama-7b and depth-27 with --norm plugin
#                         (the norms cut the whole-graph Myelin region that never built at 7B) built side by side and
#                         timed in turn; then llama-7b@2's verbose layer formats. GPU 1: the three 7B plugin engines with
#                         the rotary plugin, built side by side, each timed alone, llama-7b's layer profile at batch 1.
#                         As run, the portable runs exported beside the plugin runs ("written by another process
#                         meanwhile"; restarted by hand; they now wait for the export), and by hand later in the lease:
#                         llama-7b at --opt-level 3 (GPU 1), the type fix (plugins pinned to the caches' type) as three
#                         plugin engines under /root/work2 (GPU 1; LLM-Pruner again after the disk filled), the portable
#                         timings stopped after batch 64 (170 ms/step) and rerun as depth-27 at 1/16/64 and llama-7b's
#                         --breakdown and layer profile. Lease 2 (one GPU): `PAR_GPUS=1 par` of the six tiny plugin and
#                         portable+norm token tests after the fix
#   day13                 next (not yet run), branch wip/fuse-proj (wip/rotary-grid + q/k/v and gate/up fused into one
#                         multiply each, on by default with the GEMM plugin; llama-7b also with TRTLLM_KIT_FUSE=0 for
#                         the A/B, under /root/work-nf; and the GEMM plugin timing cuBLASLt's candidate algorithms per
#                         shape, A/B with TRTLLM_KIT_GEMM_TUNE=0): GPU 0: the rotary kernel spread over blocks and its
#                         cos/sin check (kernel tests), the tiny plugin and portable+norm engines, then every GPU test
#                         file as its own process (the whole `pytest -m gpu`); GPU 1: the three 7B plugin engines built
#                         side by side and each timed alone, llama-7b's breakdown and layer profile; then portable
#                         llama-7b (--norm plugin) at batch 256 only, 1 run (the plugin/portable ratio at 256)
#   day14                 2026-11-30 (eighth session), branch wip/fuse-proj: day13 reordered for one lease: GPU 0 the
#                         cuBLAS-alone floor of a step's multiplies (scripts/gemm_floor.py), the new kernels, every GPU
#                         test (-n 4; the large-activation test alone), portable llama-7b built beside them and timed at
#                         batch 256 after; GPU 1 the three 7B plugin engines, the profile, the tuning and fusion A/Bs
#   day15                 the same session's second lease, branch wip/gemv-nk (the GEMM plugin's weights stored out x
#                         in, its decode GEMV for <= 4 rows): GPU 0 the GEMM tests and the tiny plugin engines vs eager;
#                         GPU 1 the three 7B plugin engines, llama-7b also with TRTLLM_KIT_GEMV=0 (same engine)
#   day15b                third lease, branch wip/align-layout: LLM-Pruner again, its unaligned down projection in x out
#   day16                 2026-11-30 (ninth session): the small ops folded into the plugins: GPU 0 the kernel tests and
#                         the tiny plugin engines vs eager; GPU 1 the three 7B plugin engines, llama-7b with the GEMV at
#                         4 and 16 loads in flight per lane (same engine, batch 1)
#   day17                 the same session's second lease (one H200): the GEMV at 4 loads per lane, PDL launches; tests
#                         and the three 7B engines, llama-7b with PDL off (same engine, batch 1)
#   day18                 2026-11-30 (tenth session, one nvidia-h200-x2 lease): split-KV decode attention, SwiGLU in the
#                         gate/up multiply's epilogue, the norms' scales in the weights: kernel and tiny-engine tests on
#                         GPU 0, the three 7B engines on GPU 1, llama-7b with TRTLLM_KIT_SPLIT_KV=1 after
#   day19                 2026-11-30 (eleventh session, one nvidia-h200-x2 lease): decode attention with a per-warp online
#                         softmax and the cache rows prefetched, GEMVs reading x directly: as day18 without the A/B
#   day20                 2026-11-30 (eleventh session, second lease): day19 with the rotary embedding folded into the
#                         q/k/v multiply's epilogue; the step probe (--check, then its timings) on GPU 0 after the tests
#   day21                 2026-11-30 (twelfth session, one nvidia-h200-x2 lease): the portable-static KV layout (issue 7):
#                         GPU 0 its tiny token tests (TensorRT layers; and with the RMSNorm and GEMM plugins) and its
#                         check against ONNX Runtime, then llama-7b portable-static at the builder's default level (A/B);
#                         GPU 1 the three 7B portable-static engines with the RMSNorm and GEMM plugins, each timed alone
#   day22                 the same session's second lease: day21 with the attention reading the cache in place (no
#                         past + new Concat: day21's llama-7b engines asked 74 GB of activation memory per context and
#                         ran out of it) and the contexts of one engine sharing their activation memory; GPU 0 also
#                         the tiny plugin engines (shared memory) and, after the tests, llama-7b portable-static with
#                         TensorRT's own multiplies (--norm plugin, weights in the plan)
#   day23                 2026-11-30 (thirteenth session, first lease): where portable-static's attention time goes and
#                         what the builder's optimization level does to it: GPU 0 the portable-static GPU tests (the
#                         check fix, the rotary plugin in that layout), llama-7b cut to 2 blocks built at levels 0, 1,
#                         2 and 3, with and without the rotary plugin (7 builds at once), each profiled by CUDA kernel at
#                         batch 1, 64, 256 (profall); GPU 1 llama-7b at level 3 timed and profiled (stopped in its
#                         build's second profile at 7 minutes, to keep device time for day24)
#   day24                 the same session's second lease: the attention's multiplies reading the keys untransposed, in
#                         fp16, level 1 by default (the first lease: float multiplies after a reformat of the whole
#                         cache, and a copy of the transposed keys, every block): GPU 0 the portable-static and plugin
#                         GPU tests, then llama-7b cut to 2 blocks at levels 0, 1, 3 and 1 with the rotary plugin,
#                         profiled (profall); GPU 1 the three 7B portable-static engines (GEMM + RMSNorm plugins) and
#                         llama-7b also with the rotary plugin, built side by side, timed one at a time (that fourth
#                         build was stopped at 3 minutes: the lease would not have held its timing)
#   day25                 2026-11-30 (fourteenth session, one nvidia-h200-x2 lease): portable-static attending the
#                         past with broadcast products summed (TRTLLM_KIT_PAST_ATTENTION=reduce: no multiply Myelin
#                         could join over a copy of the cache), a prefill binding one masked position, the decode rows
#                         written with one copy per layer shape, the weights transposed through torch: GPU 0 the
#                         portable-static GPU tests in both forms, then llama-7b cut to 2 blocks in both forms (and
#                         reduce at level 0, and with the rotary plugin) profiled (profall); GPU 1 llama-7b (reduce)
#                         built with no other 7B build beside it, then depth-27 and LLM-Pruner side by side, each
#                         timed alone
#   day25b                the same session's second lease (the first was given back while idle 13 minutes in, its
#                         builds lost): llama-7b (GPU 1) and depth-27 (GPU 0), reduce form with the rotary plugin, built
#                         side by side, each timed on its own GPU; GPU 0 first the 2-block A/B with a third form,
#                         `scores` (an uncommitted variant: TensorRT 8.6 crashed building three of its tiny engines,
#                         so TRTLLM_KIT_PAST_ATTENTION no longer takes it), then that form's tiny token tests
#   day26                 never run (two GPUs; day27 ran it on one), branch wip/values-transposed: the value caches stored (B, kv_heads,
#                         head_dim, capacity) so that their sum over positions runs along the contiguous axis
#                         (TRTLLM_KIT_PAST_ATTENTION=reduce-vt). GPU 0: its tiny portable-static token tests and
#                         check, then llama-7b cut to 2 blocks in reduce and reduce-vt (rotary plugin) profiled;
#                         GPU 1: llama-7b (reduce-vt, rotary plugin) built alone and timed, then depth-27 and
#                         LLM-Pruner built side by side and timed alone. Poll without pause: a lease idle ~30 s is lost
#   day27                 ran 2026-12-01: day26 on one GPU (nvidia-h200, the only kind lent), branch
#                         wip/values-transposed: the tiny portable-static tests in reduce-vt while the three 7B models
#                         export; then llama-7b built alone and timed alone; then depth-27 and LLM-Pruner built side by
#                         side (the family's timing cache) and each timed alone (the lock: builds shared, timings
#                         exclusive). Poll without pause: a lease idle ~30 s is lost. Disk (64 GB): llama-7b's
#                         export data was deleted by hand once its engine was built
#   day28                 ran 2026-12-01 (one GPU), branch wip/split-softmax (landed): the softmax over the cached and the
#                         new positions apart (TRTLLM_KIT_PAST_ATTENTION=split-vt) and the cache capacity rounded to 8
#                         positions. g: its tiny portable-static GPU tests; bb meanwhile: llama-7b cut to 2 blocks in
#                         reduce-vt and split-vt (rotary plugin) built, then profiled at batch 1/64/256 once the tests
#                         are done (logs/profall.log; the GPU's lock: tests shared, profiles alone); b: llama-7b
#                         exported meanwhile, built in split-vt once /root/go exists (touch it when the 2-block
#                         profile says split-vt is faster at batch 256), then depth-27 and LLM-Pruner as day27
#   day29                 the seventeenth session (one GPU): the weight inputs' file made, written and hashed beside
#                          TensorRT's build, the weights handed to the parser as graph inputs (it no longer reads them)
#                          and split-vt's mask sliced once for all blocks. g: the tiny GPU tests of every layout built
#                          with --weights inputs and of portable-static, while the three 7B models export; then
#                          llama-7b built alone and timed alone (its export data deleted after its build: disk), then
#                          depth-27 and LLM-Pruner built side by side and each timed alone, as day27
#   profall DIR           scripts/profile_layers.py --kernels at batch 1, 64, 256 on every engine under DIR
#   collect               logs and results as $OUT/collect.tgz (what the device call brings back)
#   trt GPU MODE...       7B models: build engines in each KV layout and time them (scripts/bench_trt.py)
#   eager GPU             7B models on eager
#   status                tails of every log, and GPU use
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=/root/site PYTHONUNBUFFERED=1 TRT_INCLUDE_DIR=$PWD/.stage/trt86inc
LOGS=/root/logs; mkdir -p "$LOGS"
MODELS=${MODELS:-"llama-7b llama-7b-depth-27 llama-7b-llmpruner"}
OUTDIR=${OUTDIR:-/root/results/h200-trt86}
bg() { local name=$1; shift; setsid nohup bash -c "$*" > "$LOGS/$name.log" 2>&1 < /dev/null & echo "started $name"; }
case "${1:-status}" in
  setup)
    python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -v -i warn
    [ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /root/site .whl/*.whl 2>&1 | grep -v -i warn
    python3 -c "import tensorrt, torch, transformers; print('tensorrt', tensorrt.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.device_count(), 'GPU(s)')"
    nvcc --version | tail -1; nproc; df -h /root | tail -1 ;;
  tests)
    bg tests "${TESTENV:-} CUDA_VISIBLE_DEVICES=${GPU:-0} python3 -m pytest -m gpu ${TESTS:-tests/test_plugin_gpu.py tests/test_gpu.py tests/test_check_gpu.py} -q -s -x -p no:cacheprovider" ;;
  probe)
    shift; bg probe "CUDA_VISIBLE_DEVICES=${GPU:-1} python3 scripts/bench_build.py $* --jobs ${JOBS:-4} --timeout ${TIMEOUT:-420} --work /root/bb --json $LOGS/probe.json" ;;
  trt)
    gpu=$2; shift 2
    bg "trt-$gpu" "CUDA_VISIBLE_DEVICES=$gpu python3 scripts/bench_trt.py --models $MODELS --backends trt --kv-modes $* --work /root/work --out $OUTDIR --breakdown llama-7b ${EXTRA:-}" ;;
  knobs)
    shift; bg knobs "CUDA_VISIBLE_DEVICES=${GPU:-1} python3 scripts/probe_trt_build.py $* --jobs ${JOBS:-8} --timeout ${TIMEOUT:-330} --work /root/pb --json $LOGS/knobs.json" ;;
  baseline)
    bg "baseline-$2" "CUDA_VISIBLE_DEVICES=$2 python3 scripts/bench_trt.py --models $MODELS --backends eager --work /root/work --out $OUTDIR; CUDA_VISIBLE_DEVICES=$2 python3 scripts/bench_compiled.py --out /root/results/h200-compiled" ;;
  par)
    shift; n=0; for node in "$@"; do bg "t-$n" "CUDA_VISIBLE_DEVICES=$((n % ${PAR_GPUS:-2})) python3 -m pytest -m gpu '$node' -q -s -p no:cacheprovider"; n=$((n+1)); done ;;
  verify)
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; nodes=()
    for m in tiny-llama tiny-llama-depth tiny-llama-width; do nodes+=("$T[$m-portable]" "$T[$m-plugin]"); done
    bash "$0" par "${nodes[@]}" tests/test_check_gpu.py tests/test_plugin_gpu.py \
      "tests/test_gpu.py::test_fp16_engine_with_large_activations" \
      "tests/test_gpu.py::test_compiled_backend_matches_eager_and_replays_cuda_graphs"
    GPU=1 JOBS=2 TIMEOUT=1200 bash "$0" knobs llama-7b:portable llama-7b:portable:opt=0 ;;
  day3)
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; nodes=()
    for m in tiny-llama tiny-llama-depth tiny-llama-width; do nodes+=("$T[$m-portable]" "$T[$m-plugin]"); done
    PAR_GPUS=1 bash "$0" par "${nodes[@]}" tests/test_check_gpu.py tests/test_plugin_gpu.py \
      "tests/test_gpu.py::test_fp16_engine_with_large_activations" \
      "tests/test_gpu.py::test_compiled_backend_matches_eager_and_replays_cuda_graphs"
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work"
    W="while [ ! -f /root/work/onnx/llama-7b/export.json ]; do sleep 5; done;"
    bg a "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b --kv-modes portable --opt-level 0 --breakdown llama-7b --lock /root/gpu1.lock --out $R/a"
    bg b "$W CUDA_VISIBLE_DEVICES=1 $B --models llama-7b --kv-modes plugin --cuda-graph --breakdown llama-7b --lock /root/gpu1.lock --out $R/b"
    bg c "CUDA_VISIBLE_DEVICES=0 $B --models llama-7b-depth-27 --kv-modes portable --opt-level 0 --lock /root/gpu0.lock --out $R/c"
    bg d "CUDA_VISIBLE_DEVICES=0 $B --models llama-7b-llmpruner --kv-modes portable --opt-level 0 --lock /root/gpu0.lock --out $R/d"
    bg eager "sleep 20; while pgrep -f '^python3 -m pytest' >/dev/null; do sleep 5; done; CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_trt.py --backends eager --models $MODELS --work /root/work --lock /root/gpu0.lock --out $R/eager" ;;
  day4)
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; nodes=()
    for m in tiny-llama tiny-llama-depth tiny-llama-width; do nodes+=("$T[$m-portable/weights-inputs]" "$T[$m-plugin/weights-inputs]"); done
    PAR_GPUS=1 bash "$0" par "${nodes[@]}"
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    w() { echo "while [ ! -f /root/work/onnx/$1/export.json ]; do sleep 5; done;"; }  # one export per model
    bg a "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b --kv-modes portable --breakdown llama-7b --lock /root/gpu1.lock --out $R/a"
    bg b "$(w llama-7b) CUDA_VISIBLE_DEVICES=1 $B --models llama-7b --kv-modes plugin --cuda-graph --breakdown llama-7b --lock /root/gpu1.lock --out $R/b"
    bg c "CUDA_VISIBLE_DEVICES=0 $B --models llama-7b-depth-27 --kv-modes portable --lock /root/gpu0.lock --out $R/c"
    bg d "$(w llama-7b-depth-27) CUDA_VISIBLE_DEVICES=0 $B --models llama-7b-depth-27 --kv-modes plugin --cuda-graph --lock /root/gpu0.lock --out $R/d"
    bg e "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner --kv-modes portable --lock /root/gpu1.lock --out $R/e"
    bg f "$(w llama-7b-llmpruner) CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner --kv-modes plugin --cuda-graph --lock /root/gpu1.lock --out $R/f"
    bg compiled "CUDA_VISIBLE_DEVICES=0 flock /root/gpu0.lock python3 scripts/bench_compiled.py --models llama-7b-depth-27 --out /root/results/h200-compiled"
    # eager (timings and the reference tokens) once the builds are done (at most 12 min), not beside them
    bg eager "sleep 60; while [ \$(ls /root/work/engines/*/*/engine.json 2>/dev/null | wc -l) -lt 6 ] && [ \$SECONDS -lt 720 ] && pgrep -f '^python3 scripts/bench_trt.py --backends trt' >/dev/null; do sleep 5; done; CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_trt.py --backends eager --models $MODELS --work /root/work --lock /root/gpu0.lock --out $R/eager" ;;
  day5)  # not yet run: written 2026-11-30 after the device budget
    # Portable 7B engines, each alone on its GPU (they failed beside 70-110 GB benchmark runs), the family's timing
    # cache reused by the depth-pruned build; the plugin engine again (decode now on the decode profile) over the
    # whole sweep, with the layer profile; eager of 2026-11-30 is the same sweep (copied in, merged by --report-only).
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    bg p0 "CUDA_VISIBLE_DEVICES=0 $B --models llama-7b llama-7b-depth-27 --kv-modes portable --breakdown llama-7b --out $R/p0"
    bg p1 "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b --kv-modes plugin --cuda-graph --breakdown llama-7b --out $R/p1 && for b in 1 16 256; do CUDA_VISIBLE_DEVICES=1 python3 scripts/profile_layers.py /root/work/engines/plugin-winputs/llama-7b --batch \$b --json $LOGS/profile-plugin-b\$b.json; done"
    # GEMM tactics for the plugin layout: time them once on 2 blocks at the default level, then build all 32 blocks
    # (identical shapes) with that timing cache; compare build time and profile_layers with level 0 (day4)
    bg tc "sleep 600; CUDA_VISIBLE_DEVICES=1 python3 scripts/bench_build.py llama-7b@2:plugin:weights=inputs:opt=3 --timing-cache --timeout 540 --work /root/tc --json $LOGS/tc-2.json && CUDA_VISIBLE_DEVICES=1 python3 scripts/bench_build.py llama-7b:plugin:weights=inputs:opt=3 --timing-cache --timeout 540 --work /root/tc --json $LOGS/tc-32.json" ;;
  day6)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens
    w() { echo "while [ ! -f /root/work/onnx/$1/export.json ]; do sleep 5; done;"; }  # one export per model
    bg g "CUDA_VISIBLE_DEVICES=0 python3 -m pytest -m gpu tests/test_gemm_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]' -q -s -p no:cacheprovider"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && for b in 1 16 256; do CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py /root/work/engines/plugin-winputs-gemmplugin/llama-7b --batch \$b --json $LOGS/profile-gemm-b\$b.json; done"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f"
    # the portable builds failed beside 70-110 GB benchmark runs: this process holds GPU 0 from build to last timing
    bg p "$(w llama-7b) $(w llama-7b-depth-27) CUDA_VISIBLE_DEVICES=0 flock /root/gpu0.lock $B --models llama-7b llama-7b-depth-27 --kv-modes portable --breakdown llama-7b --out $R/p" ;;
  day6b)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"
    bg g "CUDA_VISIBLE_DEVICES=1 python3 -m pytest -m gpu tests/test_gemm_gpu.py -q -s -p no:cacheprovider"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && for b in 1 16; do CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py /root/work/engines/plugin-winputs-gemmplugin/llama-7b --batch \$b --json $LOGS/profile-gemm-b\$b.json; done"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f"
    bg allgpu "CUDA_VISIBLE_DEVICES=0 python3 -m pytest -m gpu tests -n 6 -q -p no:cacheprovider -rfE" ;;
  day7)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    C=/root/work/timing-plugin-winputs-gemmplugin.cache  # the family's timing cache, filled by 2 blocks of llama-7b
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock --build-after $C"
    bg tc "CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py llama-7b@2:plugin:weights=inputs:gemm=plugin --opt-batch 16 --opt-input 12 --timing-cache --work /root/tc --json $LOGS/tc.json && cp /root/tc/llama-7b.timing-cache $C.tmp && mv $C.tmp $C"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && for b in 1 16; do CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py /root/work/engines/plugin-winputs-gemmplugin/llama-7b --batch \$b --json $LOGS/profile-gemm-b\$b.json; done"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f"
    bg compiled "sleep 120; flock /root/gpu1.lock true; CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_compiled.py --models llama-7b --out /root/results/h200-compiled" ;;
  day8)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens
    bg g "CUDA_VISIBLE_DEVICES=0 python3 -m pytest -m gpu tests/test_norm_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]' -q -s -p no:cacheprovider"
    bg n "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b llama-7b-depth-27 $G --norm plugin --breakdown llama-7b --out $R/n"
    bg t "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b llama-7b-depth-27 $G --norm trt --out $R/t" ;;
  day9)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    C=/root/work/timing-plugin-winputs-gemmplugin.cache  # the family's timing cache, filled by 2 blocks of llama-7b
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock --build-after $C"
    E=/root/work/engines/plugin-winputs-gemmplugin; T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens
    P="python3 -m pytest -m gpu -q -s -p no:cacheprovider"; X="python3 scripts/bench_compiled.py --out /root/results/h200-compiled"
    bg g "CUDA_VISIBLE_DEVICES=0 $P tests/test_norm_gpu.py tests/test_gemm_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]'; CUDA_VISIBLE_DEVICES=0 TRTLLM_KIT_GEMV=0 $P tests/test_gemm_gpu.py"
    bg tc "CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py llama-7b@2:plugin:weights=inputs:gemm=plugin --opt-batch 16 --opt-input 12 --timing-cache --work /root/tc --json $LOGS/tc.json && cp /root/tc/llama-7b.timing-cache $C.tmp && mv $C.tmp $C"
    bg nocache "while [ ! -f $C ]; do sleep 5; done; CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py llama-7b:plugin:weights=inputs:gemm=plugin --opt-batch 16 --opt-input 12 --timeout 590 --work /root/nc --json $LOGS/nocache.json"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && CUDA_VISIBLE_DEVICES=1 TRTLLM_KIT_GEMV=0 $B --models llama-7b $G --breakdown llama-7b --out /root/results/ab-cublaslt/b; for b in 1 16; do CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py $E/llama-7b --batch \$b --json $LOGS/profile-b\$b.json; done; touch /root/b.done"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d; touch /root/d.done"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f; touch /root/f.done"
    # one quiet run per model of eager, compiled and the engine: after every build (no build shares the host)
    W="while [ ! -f $E/llama-7b/engine.json ] || [ ! -f $E/llama-7b-depth-27/engine.json ] || [ ! -f $E/llama-7b-llmpruner/engine.json ] || [ ! -f $LOGS/nocache.json ]; do sleep 5; done;"
    bg c7 "$W CUDA_VISIBLE_DEVICES=0 $X --models llama-7b --engine llama-7b=$E/llama-7b"
    bg c27 "$W while [ ! -f /root/b.done ] || [ ! -f /root/d.done ] || [ ! -f /root/f.done ]; do sleep 5; done; CUDA_VISIBLE_DEVICES=1 $X --models llama-7b-depth-27 --engine llama-7b-depth-27=$E/llama-7b-depth-27" ;;
  day9b)
    kill -- -"$(pgrep -f '^python3 scripts/bench_build.py llama-7b:plugin')" 2>/dev/null; rm -rf /root/work/engines
    export TRTLLM_KIT_GEMV=0; R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"; E=/root/work/engines/plugin-winputs-gemmplugin
    X="python3 scripts/bench_compiled.py --out /root/results/h200-compiled"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && CUDA_VISIBLE_DEVICES=1 TRTLLM_KIT_GEMV=1 $B --models llama-7b $G --breakdown llama-7b --out /root/results/ab-gemv/b; for b in 1 16; do CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py $E/llama-7b --batch \$b --json $LOGS/profile-b\$b.json; done; touch /root/b.done"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d; touch /root/d.done"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f; touch /root/f.done"
    W="while [ ! -f $E/llama-7b/engine.json ] || [ ! -f $E/llama-7b-depth-27/engine.json ] || [ ! -f $E/llama-7b-llmpruner/engine.json ]; do sleep 5; done;"
    bg c7 "$W CUDA_VISIBLE_DEVICES=0 $X --models llama-7b --engine llama-7b=$E/llama-7b"
    bg c27 "$W while [ ! -f /root/b.done ] || [ ! -f /root/d.done ] || [ ! -f /root/f.done ]; do sleep 5; done; CUDA_VISIBLE_DEVICES=1 $X --models llama-7b-depth-27 --engine llama-7b-depth-27=$E/llama-7b-depth-27" ;;
  day9c)
    for m in llama-7b:0 llama-7b-depth-27:1; do bg "c-${m%:*}" "CUDA_VISIBLE_DEVICES=${m#*:} python3 scripts/bench_compiled.py --models ${m%:*} --out /root/results/h200-compiled"; done ;;
  day10)
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens
    bg g "CUDA_VISIBLE_DEVICES=0 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/test_norm_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]'"
    bg tc "CUDA_VISIBLE_DEVICES=${GPU:-1} python3 scripts/bench_build.py llama-7b@2:plugin:weights=inputs:gemm=plugin --opt-batch 16 --opt-input 12 --work /root/tc --json $LOGS/tc.json; for f in /root/tc/engines/*/layers.json; do echo \"\$f: \$(grep -c '\"LayerType\": \"Reformat\"' \$f) reformats, \$(grep -c '\"Name\": \"Reformatting CopyNode for .* to rms_norm' \$f) next to a norm, \$(grep -c '\"PluginType\": \"TrtllmKitRMSNorm\"' \$f) norms\"; done" ;;
  day11)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"; E=/root/work/engines/plugin-winputs-gemmplugin
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens
    bg g "CUDA_VISIBLE_DEVICES=0 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/test_rotary_gpu.py tests/test_norm_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]'"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && for b in 1 16; do CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py $E/llama-7b --batch \$b --json $LOGS/profile-b\$b.json; done"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f"
    bg t "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --rope trt --out /root/results/rope-trt"
    # the reformats around the norms (2026-11-30): the formats 8.6 chose, from its verbose engine layer information
    bg fmt "sleep 200; CUDA_VISIBLE_DEVICES=0 TRTLLM_KIT_TRT_VERBOSE=1 python3 scripts/bench_build.py llama-7b@2:plugin:weights=inputs:gemm=plugin --opt-batch 16 --opt-input 12 --work /root/fmt --json $LOGS/fmt.json; grep -h 'Layer(.*\\(rms_norm\\|Reformat\\|layer0_mlp_res\\|layer0_attn_res\\)' /root/fmt/engines/*/build.log | head -60 > $LOGS/fmt-layers.txt" ;;
  day12)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"; E=/root/work/engines/plugin-winputs-gemmplugin
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens
    N="--kv-modes portable --norm plugin --lock /root/gpu0.lock"
    bg g "CUDA_VISIBLE_DEVICES=0 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/test_rotary_gpu.py tests/test_norm_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]' '$T[tiny-llama-portable+norm/weights-inputs]' '$T[tiny-llama-depth-portable+norm/weights-inputs]' '$T[tiny-llama-width-portable+norm/weights-inputs]'; touch /root/g.done"
    w() { echo "sleep 30; while [ ! -f /root/work/onnx/$1/export.json ]; do sleep 5; done;"; }  # the plugin run exports
    bg p7 "$(w llama-7b) CUDA_VISIBLE_DEVICES=0 $B --models llama-7b $N --breakdown llama-7b --out $R/p7"
    bg p27 "$(w llama-7b-depth-27) CUDA_VISIBLE_DEVICES=0 $B --models llama-7b-depth-27 $N --out $R/p27"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py $E/llama-7b --batch 1 --json $LOGS/profile-b1.json"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f"
    # the reformats around the norms: the formats 8.6 chose, from its verbose engine layer information
    bg fmt "while [ ! -f /root/g.done ]; do sleep 5; done; CUDA_VISIBLE_DEVICES=0 TRTLLM_KIT_TRT_VERBOSE=1 python3 scripts/bench_build.py llama-7b@2:plugin:weights=inputs:gemm=plugin --opt-batch 16 --opt-input 12 --work /root/fmt --json $LOGS/fmt.json; grep -h 'Layer(.*\\(rms_norm\\|Reformat\\|layer0_mlp_res\\|layer0_attn_res\\)' /root/fmt/engines/*/build.log | head -60 > $LOGS/fmt-layers.txt" ;;
  day13)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"; E=/root/work/engines/plugin-winputs-gemmplugin
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens
    P="python3 -m pytest -m gpu -q -s -p no:cacheprovider"
    w() { echo "sleep 30; while [ ! -f /root/work/onnx/$1/export.json ]; do sleep 5; done;"; }  # the plugin runs export
    bg g "CUDA_VISIBLE_DEVICES=0 $P tests/test_rotary_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]' '$T[tiny-llama-portable+norm/weights-inputs]'; for f in tests/test_*gpu*.py; do CUDA_VISIBLE_DEVICES=0 $P \$f > $LOGS/all-\$(basename \$f .py).log 2>&1; done; touch /root/g.done"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py $E/llama-7b --batch 1 --json $LOGS/profile-b1.json"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f"
    # on GPU 0 once its tests are done: fusion off (A/B, its own work dir, engine deleted once timed), then portable
    # llama-7b at batch 256 only (1 run: the plugin/portable ratio there)
    G0="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu0.lock"
    bg nf "$(w llama-7b) while [ ! -f /root/g.done ]; do sleep 5; done; mkdir -p /root/work-nf && ln -sfn /root/work/onnx /root/work-nf/onnx && CUDA_VISIBLE_DEVICES=0 TRTLLM_KIT_FUSE=0 python3 scripts/bench_trt.py --backends trt --work /root/work-nf --weights inputs --models llama-7b $G0 --cleanup --breakdown llama-7b --out /root/results/nofuse; CUDA_VISIBLE_DEVICES=0 $B --models llama-7b --kv-modes portable --norm plugin --lock /root/gpu0.lock --cleanup --batches 256 --warmup 0 --repeats 1 --out $R/p256"
    # the GEMM plugin's algorithm timing off (the heuristic's first choice, as before): the same engine as b's, timed
    bg nt "while [ ! -f $E/llama-7b/engine.json ] && [ \$SECONDS -lt 900 ]; do sleep 5; done; CUDA_VISIBLE_DEVICES=1 TRTLLM_KIT_GEMM_TUNE=0 python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs --models llama-7b $G --breakdown llama-7b --out /root/results/notune" ;;
  day14)  # day13 reordered for one lease (2026-11-30, eighth session); day14g is GPU 0's test job
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"; E=/root/work/engines/plugin-winputs-gemmplugin
    w() { echo "sleep 30; while [ ! -f /root/work/onnx/$1/export.json ]; do sleep 5; done;"; }  # the plugin runs export
    # GPU 0: the cuBLAS floor, the new kernels' tests, every GPU test; it holds gpu0.lock shared, so the portable
    # build runs beside the tests and its batch-256 timing (exclusive) waits for them
    bg g "flock -s /root/gpu0.lock bash $0 day14g; touch /root/g.done"
    bg p256 "$(w llama-7b) while [ ! -f /root/floor.done ]; do sleep 5; done; CUDA_VISIBLE_DEVICES=0 $B --models llama-7b --kv-modes portable --norm plugin --lock /root/gpu0.lock --cleanup --batches 256 --warmup 0 --repeats 1 --out $R/p256"
    # GPU 1: the three 7B plugin engines built side by side, each timed alone; llama-7b's profile; then the A/Bs on
    # llama-7b: the GEMM plugin's algorithm timing off (same engine), fusion off (its own engine, deleted once timed)
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py $E/llama-7b --batch 1 --json $LOGS/profile-b1.json"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f"
    bg nt "while [ ! -f $E/llama-7b/engine.json ] && [ \$SECONDS -lt 900 ]; do sleep 5; done; sleep 60; CUDA_VISIBLE_DEVICES=1 TRTLLM_KIT_GEMM_TUNE=0 python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs --models llama-7b $G --breakdown llama-7b --out /root/results/notune"
    bg nf "$(w llama-7b) mkdir -p /root/work-nf && ln -sfn /root/work/onnx /root/work-nf/onnx && CUDA_VISIBLE_DEVICES=1 TRTLLM_KIT_FUSE=0 python3 scripts/bench_trt.py --backends trt --work /root/work-nf --weights inputs --models llama-7b $G --cleanup --breakdown llama-7b --out /root/results/nofuse" ;;
  day14g)
    P="python3 -m pytest -m gpu -q -s -p no:cacheprovider"; export CUDA_VISIBLE_DEVICES=0
    python3 scripts/gemm_floor.py --json $LOGS/gemm-floor.json
    python3 scripts/gemm_floor.py --model llama-7b-llmpruner --batches 1 --json $LOGS/gemm-floor-llmpruner.json
    touch /root/floor.done
    $P -n 4 tests --deselect tests/test_gpu.py::test_fp16_engine_with_large_activations > $LOGS/all.log 2>&1
    tail -5 $LOGS/all.log
    $P tests/test_gpu.py::test_fp16_engine_with_large_activations > $LOGS/large.log 2>&1
    tail -3 $LOGS/large.log ;;
  day15)  # 2026-11-30 (eighth session, second lease), branch wip/gemv-nk: weights stored out x in + the decode GEMV
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"; E=/root/work/engines/plugin-winputs-gemmplugin
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; P="python3 -m pytest -m gpu -q -s -p no:cacheprovider"
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 4 tests/test_gemm_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]' tests/test_check_gpu.py"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f"
    # the decode GEMV off (cuBLASLt with the same out-x-in weights): the same engine as b's, timed after it
    bg ng "while [ ! -f $E/llama-7b/engine.json ] && [ \$SECONDS -lt 900 ]; do sleep 5; done; sleep 60; CUDA_VISIBLE_DEVICES=1 TRTLLM_KIT_GEMV=0 $B --models llama-7b $G --breakdown llama-7b --out /root/results/nogemv" ;;
  day15b)  # the same session's third lease (nvidia-h200), branch wip/align-layout: LLM-Pruner with its down projection
    # kept in x out (rows of 14,312 bytes out x in), the sweep as day15's f
    python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs --models llama-7b-llmpruner \
      --kv-modes plugin --gemm plugin --cuda-graph --out /root/results/h200-trt86/f 2>&1 | grep -v "still" | tail -8 ;;
  day16)  # 2026-11-30 (ninth session): the small ops folded into the plugins (engine/folds.py). GPU 0: the kernels'
    # tests and the tiny plugin engines vs eager; GPU 1: the three 7B plugin engines built side by side, each timed
    # alone, llama-7b's breakdown and layer profile, then the GEMV's loads in flight per lane (4, 16; 8 is the default)
    # on the same engine at batch 1
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"; E=/root/work/engines/plugin-winputs-gemmplugin
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; P="python3 -m pytest -m gpu -q -s -p no:cacheprovider"
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 4 tests/test_gemm_gpu.py tests/test_rotary_gpu.py tests/test_norm_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]' tests/test_check_gpu.py"
    bash "$0" day16t ;;
  day16t)  # day16's GPU 1 part (restarted alone after the first try's builds failed: a replaced output's name repeated)
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"; E=/root/work/engines/plugin-winputs-gemmplugin
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && CUDA_VISIBLE_DEVICES=1 flock /root/gpu1.lock python3 scripts/profile_layers.py $E/llama-7b --batch 1 --json $LOGS/profile-b1.json && for u in 4 16; do CUDA_VISIBLE_DEVICES=1 TRTLLM_KIT_GEMV_UNROLL=\$u $B --models llama-7b $G --batches 1 --breakdown llama-7b --out /root/results/u\$u; done"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f" ;;
  day17)  # the same session's second lease (one H200): the GEMV at 4 loads per lane and PDL launches (decode GEMV,
    # rotary, attention). The kernel and tiny-engine tests hold the GPU's lock shared, as the builds do; every timing
    # waits for it alone. llama-7b's breakdown with PDL off after (same engine).
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu0.lock"
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; P="python3 -m pytest -m gpu -q -p no:cacheprovider"
    bg g "flock -s /root/gpu0.lock $P -n 4 tests/test_gemm_gpu.py::test_gemm_folds_match_eager_math tests/test_gemm_gpu.py::test_chained_folded_gemvs_wait_for_each_other tests/test_gemm_gpu.py::test_gemm_out_x_in_and_its_decode_gemv tests/test_rotary_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]'"
    bg b "sleep 5; $B --models llama-7b $G --breakdown llama-7b --out $R/b && TRTLLM_KIT_PDL=0 $B --models llama-7b $G --batches 1 --breakdown llama-7b --out /root/results/nopdl"
    bg d "sleep 5; $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "sleep 5; $B --models llama-7b-llmpruner $G --out $R/f" ;;
  day18)  # 2026-11-30 (tenth session), branch wip/decode-step: split-KV decode attention, SwiGLU in the gate/up
    # multiply's epilogue, the norms' scales in the weights (scripts/h200/decode_step_probe.cu measured each first).
    # GPU 0: the kernel tests and the tiny plugin engines vs eager; GPU 1: the three 7B plugin engines built side by
    # side, each timed alone, llama-7b's breakdown, then the same engine with TRTLLM_KIT_SPLIT_KV=1 at batch 1
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; P="python3 -m pytest -m gpu -q -p no:cacheprovider"
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 4 tests/test_gemm_gpu.py tests/test_plugin_gpu.py tests/test_rotary_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]'"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b && CUDA_VISIBLE_DEVICES=1 TRTLLM_KIT_SPLIT_KV=1 $B --models llama-7b $G --batches 1 --breakdown llama-7b --out /root/results/nosplit"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f" ;;
  day19)  # 2026-11-30 (eleventh session): the decode attention kernel's per-warp online softmax (K and V rows loaded
    # together) and L2 prefetch of its cache rows, the GEMVs reading x from global memory (decode_step_probe.cu first).
    # GPU 0: the kernel tests and the tiny plugin engines vs eager; GPU 1: the three 7B plugin engines, each timed alone
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; P="python3 -m pytest -m gpu -q -p no:cacheprovider"
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 4 tests/test_gemm_gpu.py tests/test_plugin_gpu.py tests/test_rotary_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]'"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f" ;;
  day20)  # 2026-11-30 (eleventh session, second lease): as day19, with the rotary embedding in the fused q/k/v
    # multiply's epilogue (GEMM plugin epilogue 3); then scripts/h200/decode_step_probe.cu on GPU 0 after the tests
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --weights inputs"
    G="--kv-modes plugin --gemm plugin --cuda-graph --lock /root/gpu1.lock"
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; P="python3 -m pytest -m gpu -q -p no:cacheprovider"
    S="nvcc -std=c++17 -O3 -arch=sm_90 -Itrtllm_kit/engine/plugin -o /root/step scripts/h200/decode_step_probe.cu"
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 4 tests/test_gemm_gpu.py tests/test_plugin_gpu.py tests/test_rotary_gpu.py '$T[tiny-llama-plugin/weights-inputs]' '$T[tiny-llama-depth-plugin/weights-inputs]' '$T[tiny-llama-width-plugin/weights-inputs]'; $S && CUDA_VISIBLE_DEVICES=0 /root/step --check > $LOGS/probe-check.txt 2>&1; CUDA_VISIBLE_DEVICES=0 /root/step > $LOGS/probe-run.txt 2>&1"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f" ;;
  day21)  # 2026-11-30 (twelfth session): the portable-static KV layout: the TensorRT layers' attention over a
    # fixed-capacity cache that the runner owns (issue 7's portable targets), with the RMSNorm and GEMM plugins
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work"
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --cuda-graph"
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; P="python3 -m pytest -m gpu -q -p no:cacheprovider"
    W="while [ ! -f /root/work/onnx/llama-7b/export.json ]; do sleep 5; done;"
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 4 -k 'portable-static or portable_static' tests/test_gpu.py tests/test_check_gpu.py::test_check_passes_for_a_portable_static_engine; $W CUDA_VISIBLE_DEVICES=0 $B --models llama-7b $G --opt-level 3 --out $R/o3"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --lock /root/gpu1.lock --out $R/b"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --lock /root/gpu1.lock --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --lock /root/gpu1.lock --out $R/f" ;;
  day22)  # 2026-11-30 (twelfth session, second lease): see the header
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work"
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --cuda-graph"
    T=tests/test_gpu.py::test_trt_engines_generate_eager_tokens; P="python3 -m pytest -m gpu -q -p no:cacheprovider"
    W="while [ ! -f /root/work/onnx/llama-7b/export.json ]; do sleep 5; done;"
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 6 -k 'portable-static or portable_static or (llama-plugin and inputs)' tests/test_gpu.py tests/test_check_gpu.py::test_check_passes_for_a_portable_static_engine; $W CUDA_VISIBLE_DEVICES=0 $B --models llama-7b --kv-modes portable-static --norm plugin --cuda-graph --breakdown llama-7b --out $R/pure"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --lock /root/gpu1.lock --out $R/b"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --lock /root/gpu1.lock --out $R/d"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --lock /root/gpu1.lock --out $R/f" ;;
  day23)  # 2026-11-30 (thirteenth session, first lease): see the header
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work"
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --cuda-graph"
    P="python3 -m pytest -m gpu -q -p no:cacheprovider"
    C="llama-7b@2:portable-static:weights=inputs:gemm=plugin:norm=plugin"
    E=/root/work/engines/portable-static-opt3-winputs-gemmplugin-normplugin/llama-7b
    rm -rf /root/work/engines/portable-static-opt3-winputs-gemmplugin-normplugin /root/bb/engines
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 6 -k 'portable-static or portable_static' tests/test_gpu.py tests/test_check_gpu.py"
    bg bb "CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py --jobs 7 --timeout 540 --work /root/bb --json $LOGS/bb.json $C:opt=0 $C:opt=0:rope=plugin $C:opt=1 $C:opt=1:rope=plugin $C:opt=2 $C:opt=3 $C:opt=3:rope=plugin; CUDA_VISIBLE_DEVICES=0 bash $0 profall /root/bb/engines"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --opt-level 3 --breakdown llama-7b --out $R/o3 && for b in 1 64 256; do CUDA_VISIBLE_DEVICES=1 python3 scripts/profile_layers.py $E --batch \$b --kernels --top 15 --json $LOGS/k-7b-o3-b\$b.json; done" ;;
  day24)  # 2026-11-30 (thirteenth session, second lease): see the header
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --lock /root/gpu1.lock"
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --cuda-graph"
    P="python3 -m pytest -m gpu -q -p no:cacheprovider"
    C="llama-7b@2:portable-static:weights=inputs:gemm=plugin:norm=plugin"
    rm -rf /root/bb/engines
    bg g "CUDA_VISIBLE_DEVICES=0 $P -n 8 -k 'portable-static or portable_static or plugin' tests/test_gpu.py tests/test_check_gpu.py; CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py --jobs 4 --timeout 540 --work /root/bb --json $LOGS/bb.json $C:opt=0 $C:opt=1 $C:opt=3 $C:opt=1:rope=plugin; CUDA_VISIBLE_DEVICES=0 bash $0 profall /root/bb/engines"
    bg b "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --breakdown llama-7b --out $R/b24"
    bg d "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-depth-27 $G --out $R/d24"
    bg f "CUDA_VISIBLE_DEVICES=1 $B --models llama-7b-llmpruner $G --out $R/f24"
    bg r "while [ ! -f /root/work/onnx/llama-7b/export.json ]; do sleep 5; done; CUDA_VISIBLE_DEVICES=1 $B --models llama-7b $G --rope plugin --breakdown llama-7b --out $R/r24" ;;
  day25)  # 2026-11-30 (fourteenth session): see the header
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --lock /root/gpu1.lock"
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --cuda-graph"
    P="python3 -m pytest -m gpu -q -p no:cacheprovider"; K="-k 'portable-static or portable_static'"
    C="llama-7b@2:portable-static:weights=inputs:gemm=plugin:norm=plugin"
    X=TRTLLM_KIT_PAST_ATTENTION=reduce; E=/root/work/engines/portable-static-winputs-gemmplugin-normplugin-pastreduce
    rm -rf /root/bb/engines
    bg g "CUDA_VISIBLE_DEVICES=0 $X $P -n 6 $K tests/test_gpu.py tests/test_check_gpu.py; CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py --jobs 4 --timeout 540 --work /root/bb --json $LOGS/bb.json $C:opt=1:past=matmul $C:opt=1:past=reduce $C:opt=0:past=reduce $C:opt=1:rope=plugin:past=reduce; CUDA_VISIBLE_DEVICES=0 bash $0 profall /root/bb/engines; CUDA_VISIBLE_DEVICES=0 $P -n 6 $K tests/test_gpu.py tests/test_check_gpu.py"
    bg b "CUDA_VISIBLE_DEVICES=1 $X $B --models llama-7b $G --breakdown llama-7b --out $R/b25"
    bg d "CUDA_VISIBLE_DEVICES=1 $X $B --models llama-7b-depth-27 $G --build-after $E/llama-7b/engine.json --out $R/d25"
    bg f "CUDA_VISIBLE_DEVICES=1 $X $B --models llama-7b-llmpruner $G --build-after $E/llama-7b/engine.json --out $R/f25" ;;
  day25b)  # the same session's second lease (the first was given back while idle, 13 minutes in): llama-7b (GPU 1) and
    # depth-27 (GPU 0) with the past reduced and the rotary plugin, each built beside the other and timed alone; GPU 0
    # first the 2-block A/B of the scores form (profiled), then its tiny token tests
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work"
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --rope plugin --cuda-graph"
    P="python3 -m pytest -m gpu -q -p no:cacheprovider"; K="-k 'portable-static or portable_static'"
    C="llama-7b@2:portable-static:weights=inputs:gemm=plugin:norm=plugin:rope=plugin"
    X=TRTLLM_KIT_PAST_ATTENTION=reduce
    bg b "CUDA_VISIBLE_DEVICES=1 $X $B --models llama-7b $G --breakdown llama-7b --out $R/b25"
    bg d "CUDA_VISIBLE_DEVICES=0 $X $B --models llama-7b-depth-27 $G --lock /root/gpu0.lock --out $R/d25"
    bg g "CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py --jobs 2 --timeout 400 --work /root/bb --json $LOGS/bb.json $C:opt=1:past=scores $C:opt=1:past=reduce; CUDA_VISIBLE_DEVICES=0 bash $0 profall /root/bb/engines; CUDA_VISIBLE_DEVICES=0 TRTLLM_KIT_PAST_ATTENTION=scores $P -n 4 $K tests/test_gpu.py" ;;
  day26)  # next session, branch wip/values-transposed: see the header
    R=/root/results/h200-trt86; B="python3 scripts/bench_trt.py --backends trt --work /root/work --lock /root/gpu1.lock"
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --rope plugin --cuda-graph"
    P="python3 -m pytest -m gpu -q -p no:cacheprovider"; K="-k 'portable-static or portable_static'"
    C="llama-7b@2:portable-static:weights=inputs:gemm=plugin:norm=plugin:rope=plugin"
    X=TRTLLM_KIT_PAST_ATTENTION=reduce-vt; E=/root/work/engines/portable-static-winputs-gemmplugin-normplugin-ropeplugin-pastreduce-vt
    rm -rf /root/bb/engines
    bg g "CUDA_VISIBLE_DEVICES=0 $X $P -n 6 $K tests/test_gpu.py tests/test_check_gpu.py; CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py --jobs 2 --timeout 400 --work /root/bb --json $LOGS/bb.json $C:opt=1:past=reduce $C:opt=1:past=reduce-vt; CUDA_VISIBLE_DEVICES=0 bash $0 profall /root/bb/engines"
    bg b "CUDA_VISIBLE_DEVICES=1 $X $B --models llama-7b $G --breakdown llama-7b --out $R/b26"
    bg d "CUDA_VISIBLE_DEVICES=1 $X $B --models llama-7b-depth-27 $G --build-after $E/llama-7b/engine.json --out $R/d26"
    bg f "CUDA_VISIBLE_DEVICES=1 $X $B --models llama-7b-llmpruner $G --build-after $E/llama-7b/engine.json --out $R/f26" ;;
  day27)  # one GPU: see the header
    R=/root/results/h200-trt86; L=/root/gpu0.lock; X=TRTLLM_KIT_PAST_ATTENTION=reduce-vt
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --rope plugin --cuda-graph"
    B="$X CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_trt.py --backends trt --work /root/work --lock $L $G"
    P="python3 -m pytest -m gpu -q -p no:cacheprovider"; K="-k 'portable-static or portable_static'"
    O=/root/work/onnx; w() { echo "while [ ! -f $O/$1/export.json ]; do sleep 3; done;"; }
    bg g "$X CUDA_VISIBLE_DEVICES=0 $P -n 6 $K tests/test_gpu.py tests/test_check_gpu.py; $(w llama-7b) $(w llama-7b-depth-27) $(w llama-7b-llmpruner) touch /root/quiet"
    bg b "$B --models llama-7b --breakdown llama-7b --build-after /root/quiet --out $R/b27; touch /root/b.done"
    bg d "$B --models llama-7b-depth-27 --build-after /root/b.done --out $R/d27"
    bg f "$(w llama-7b-depth-27) $B --models llama-7b-llmpruner --build-after /root/b.done --out $R/f27" ;;
  day28)  # one GPU: see the header
    R=/root/results/h200-trt86; L=/root/gpu0.lock; X=TRTLLM_KIT_PAST_ATTENTION=split-vt
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --rope plugin --cuda-graph"
    B="$X CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_trt.py --backends trt --work /root/work --lock $L $G"
    P="python3 -m pytest -m gpu -q -p no:cacheprovider"; K="-k 'portable-static or portable_static'"
    C="llama-7b@2:portable-static:weights=inputs:gemm=plugin:norm=plugin:rope=plugin:opt=1"
    O=/root/work/onnx; w() { echo "while [ ! -f $O/$1/export.json ]; do sleep 3; done;"; }
    bg g "$X CUDA_VISIBLE_DEVICES=0 flock -s $L $P -n 6 $K tests/test_gpu.py tests/test_check_gpu.py"
    bg bb "sleep 20; CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_build.py --jobs 2 --timeout 400 --work /root/bb --json $LOGS/bb.json $C:past=reduce-vt $C:past=split-vt; CUDA_VISIBLE_DEVICES=0 flock $L bash $0 profall /root/bb/engines"
    bg b "$B --models llama-7b --breakdown llama-7b --build-after /root/go --out $R/b28; rm -f $O/llama-7b/model.onnx.data; touch /root/b.done"  # disk: 64 GB
    bg d "$(w llama-7b) $B --models llama-7b-depth-27 --build-after /root/b.done --out $R/d28"
    bg f "$(w llama-7b-depth-27) $B --models llama-7b-llmpruner --build-after /root/b.done --out $R/f28" ;;
  day29)  # one GPU: see the header
    R=/root/results/h200-trt86; L=/root/gpu0.lock
    G="--kv-modes portable-static --weights inputs --gemm plugin --norm plugin --rope plugin --cuda-graph"
    B="CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_trt.py --backends trt --work /root/work --lock $L $G"
    P="python3 -m pytest -m gpu -q -p no:cacheprovider"; K="-k 'portable-static or portable_static or weights-inputs'"
    O=/root/work/onnx; w() { echo "while [ ! -f $O/$1/export.json ]; do sleep 3; done;"; }
    bg g "CUDA_VISIBLE_DEVICES=0 flock -s $L $P -n 6 $K tests/test_gpu.py tests/test_check_gpu.py; $(w llama-7b) $(w llama-7b-depth-27) $(w llama-7b-llmpruner) touch /root/quiet"
    bg b "$B --models llama-7b --breakdown llama-7b --build-after /root/quiet --out $R/b29; rm -f $O/llama-7b/model.onnx.data; touch /root/b.done"
    bg d "$(w llama-7b) $B --models llama-7b-depth-27 --build-after /root/b.done --out $R/d29"
    bg f "$(w llama-7b-depth-27) $B --models llama-7b-llmpruner --build-after /root/b.done --out $R/f29" ;;
  profall)
    for e in "$2"/*/; do for b in 1 64 256; do
      echo "=== $e batch $b"; python3 scripts/profile_layers.py "$e" --batch $b --kernels --top 12 --json "$LOGS/k-$(basename "$e")-b$b.json" 2>&1 | grep -v -i warn
    done; done > "$LOGS/profall.log" 2>&1 ;;
  collect)  # one archive: $OUT brings back at most 8 files, 2 folders down
    tar czf "$OUT/collect.tgz" -C /root logs results $( [ -d /root/pb/logs ] && echo pb/logs ) $( [ -d /root/bb/logs ] && echo bb/logs ) 2>&1 | tail -3; ls -la "$OUT" ;;
  eager)
    bg "eager-$2" "CUDA_VISIBLE_DEVICES=$2 python3 scripts/bench_trt.py --models $MODELS --backends eager --work /root/work --out $OUTDIR" ;;
  status)
    for f in "$LOGS"/*.log; do echo "=== $f"; tail -n "${LINES:-15}" "$f"; done
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader; df -h /root | tail -1
    pgrep -af "pytest|bench_|trtllm-kit" | cut -c1-150 ;;
  *) sed -n 2,16p "$0"; exit 2 ;;
esac
