#!/bin/sh
# The README's "With a real model" measurements: SmolLM2-135M-Instruct against the tiny
# random-init model on the same splits, seeds and budget (configs/smollm2.sh and its twin
# configs/smollm2_tiny.sh), on a CPU.
#
#   sh scripts/real_model_study.sh        # about 2 hours on 2 cores; finished runs are skipped
#
# For each model: the interference scenario (FedRouter, FedAvg, Local; seeds 111 and 222) and
# its report; local purity and routing accuracy of the untrained embeddings at four
# synthetic_overlap values and on the real tasks' rows (scripts/overlap_purity.py); FedRouter
# again with local_schedule=all; the benchmark's unit costs (python -m fedrouter.bench).
root="${output_root:-output/realmodel}"
seeds="${seeds:-111 222}"
python_bin="${PYTHON:-python}"
mkdir -p "$root"

preset_of() { if [ "$1" = tiny ]; then echo configs/smollm2_tiny.sh; else echo configs/smollm2.sh; fi; }

for model in smollm2 tiny; do
    methods="clustered fedavg local" scenarios=interference seeds="$seeds" \
        output_root="$root/$model" sh training_scripts/run_scenarios.sh "$(preset_of "$model")" \
        || exit 1
    "$python_bin" -m fedrouter.report "$root/$model" || exit 1
done

for model in smollm2 tiny; do
    name=smollm2-135m
    [ "$model" = tiny ] && name=tiny
    "$python_bin" scripts/overlap_purity.py --model "$name" 2>&1 \
        | tee "$root/purity_$model.txt" | grep synthetic_overlap || exit 1
    "$python_bin" scripts/overlap_purity.py --model "$name" \
        --local_data_dir tests/data/hub_layout 2>&1 | tee -a "$root/purity_$model.txt" | tail -1
done

for model in smollm2 tiny; do
    all="$(mktemp)"
    printf '. %s\nlocal_schedule="all"\n' "$(preset_of "$model")" > "$all"
    methods=clustered scenarios=interference seeds="$seeds" \
        output_root="$root/${model}_all" sh training_scripts/run_scenarios.sh "$all"
    status=$?
    rm -f "$all"
    [ $status -eq 0 ] || exit 1
    "$python_bin" -m fedrouter.report "$root/${model}_all" || exit 1
done

# Last, so that nothing else shares the cores while it times the unit costs.
for model in smollm2 tiny; do
    "$python_bin" -m fedrouter.bench --preset "$(preset_of "$model")" --rounds 2 \
        --out "$root/bench_$model.json" > "$root/bench_$model.txt" 2>&1 || exit 1
    tail -32 "$root/bench_$model.txt"
done
