#!/bin/sh
# Methods x scenarios x seeds, one launcher run (and one log per seed) for each.
#
#   sh training_scripts/run_scenarios.sh [BASE_PRESET]
#
# The base preset (default configs/quickstart.sh: offline, tiny model) sets the model, data
# and schedule; each scenario preset in configs/scenarios/ is a small diff on top of it.
# To run the paper's model and data, pass a preset that sets model_name_or_path and
# dataset_name (or an empty file to keep the launcher's paper defaults).
# Afterwards: python -m fedrouter.report "$output_root"
#
# A run whose summary.json exists is skipped, so an interrupted comparison continues where it
# stopped when started again with the same output_root (rerun=1 runs everything again).

base_preset="${1:-configs/quickstart.sh}"
methods="${methods:-}"        # empty: every method of the registry, python -m fedrouter.methods
scenarios="${scenarios:-single interference generalization}"
seeds="${seeds:-111 222 333}"
output_root="${output_root:-output/scenarios}"
rerun="${rerun:-0}"
sim_round="${sim_round:-}"   # cfl's clustering round; empty: the base preset's num_rounds / 2

python_bin="${PYTHON:-python}"
if [ -z "$methods" ]; then
    methods="$("$python_bin" -m fedrouter.methods)" || {
        echo "error: cannot list the methods (python -m fedrouter.methods)" >&2; exit 2; }
fi

here="$(dirname "$0")"
# Every preset is checked before anything runs, so a typo never starts the wrong experiment.
[ -f "$base_preset" ] || { echo "error: base preset '$base_preset' not found" >&2; exit 2; }
for scenario in $scenarios; do
    scenario_preset="configs/scenarios/${scenario}.sh"
    [ -f "$scenario_preset" ] || { echo "error: no scenario preset $scenario_preset" >&2; exit 2; }
done
[ -n "$(echo $seeds)" ] || { echo "error: seeds is empty; nothing to run" >&2; exit 2; }

failed=""
for scenario in $scenarios; do
    scenario_preset="configs/scenarios/${scenario}.sh"
    for method in $methods; do
        # The run directory carries the stored name (fedrouter is stored as clustered).
        stored="$("$python_bin" -m fedrouter.methods --canonical "$method" 2>/dev/null)" \
            || stored="$method"
        todo=""
        for seed in $seeds; do
            if [ "$rerun" = 1 ] || \
                [ ! -f "$output_root/${scenario}_${method}_${stored}_seed${seed}/summary.json" ]; then
                todo="$todo $seed"
            fi
        done
        todo="${todo# }"
        if [ -z "$todo" ]; then
            echo "### scenario=$scenario method=$method: done for seeds $seeds, skipped"
            continue
        fi
        preset="$(mktemp)"
        {
            cat "$base_preset"
            cat "$scenario_preset"
            echo "fed_alg=\"$method\""
            echo "seeds=\"$todo\""
            echo "output_dir=\"$output_root\""
            echo "sim_alias=\"${scenario}_${method}\""
            if [ -n "$sim_round" ]; then echo "sim_round=$sim_round"; else
                echo 'sim_round=$(( (num_rounds + 1) / 2 ))'; fi
        } > "$preset"
        echo "### scenario=$scenario method=$method seeds=$todo"
        sh "$here/run_flower_simulation_router.sh" "$preset"
        status=$?
        rm -f "$preset"
        # Keep going: the report lists failed and incomplete runs.
        [ $status -eq 0 ] || failed="$failed ${scenario}/${method}"
    done
done
echo "All runs done. Report: python -m fedrouter.report $output_root"
if [ -n "$failed" ]; then
    echo "error: failed:$failed" >&2
    exit 1
fi
