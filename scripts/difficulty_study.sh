#!/bin/sh
# The difficulty study: methods x seeds under a scenario, at several values of the synthetic
# benchmark's knob synthetic_overlap, then one report over them all.
#
#   sh scripts/difficulty_study.sh
#
# Each knob value gets a folder $output_root/overlap_<value>/ holding its base preset (the
# base preset, rounds=8 evaluated at the last one, and the knob) and its runs, made by
# training_scripts/run_scenarios.sh. A run whose summary.json exists is skipped, so starting
# the command again resumes an interrupted study (rerun=1 runs everything again). The report,
# python -m fedrouter.report $output_root, sees every knob value: results.md has a method x
# knob table and difficulty.png plots routing accuracy and ROUGE-1 against the knob.
#
# The environment overrides the defaults below, e.g.
#   overlaps="0 1" seeds="111" sh scripts/difficulty_study.sh

overlaps="${overlaps:-0 0.33 0.67 1}"
methods="${methods:-clustered router_oracle fedavg}"
scenarios="${scenarios:-interference}"
seeds="${seeds:-111 222}"
base_preset="${base_preset:-configs/quickstart_all.sh}"  # quickstart, every local cluster a round
rounds="${rounds:-8}"                                     # evaluated once, after the last round
output_root="${output_root:-output/difficulty}"
python_bin="${PYTHON:-python}"

# Presets source each other by paths from the project root.
cd "$(dirname "$0")/.." || exit 2
[ -f "$base_preset" ] || { echo "error: base preset '$base_preset' not found" >&2; exit 2; }
[ -n "$(echo $overlaps)" ] || { echo "error: overlaps is empty; nothing to run" >&2; exit 2; }
# Every knob value is checked before anything runs: a typo stops here with one line.
for overlap in $overlaps; do
    "$python_bin" -m fedrouter.config --dataset_name multitask_synthetic \
        --synthetic_overlap "$overlap" > /dev/null || exit 2
done

failed=""
for overlap in $overlaps; do
    root="$output_root/overlap_$overlap"
    mkdir -p "$root" || { echo "error: cannot create '$root'" >&2; exit 2; }
    preset="$root/base_preset.sh"
    {
        echo "# The difficulty study's base preset at synthetic_overlap=$overlap."
        echo ". $base_preset"
        echo "num_rounds=$rounds"
        echo "eval_round=\"$rounds\""
        echo "synthetic_overlap=$overlap"
    } > "$preset"
    echo "##### synthetic_overlap=$overlap"
    methods="$methods" scenarios="$scenarios" seeds="$seeds" output_root="$root" \
        sh training_scripts/run_scenarios.sh "$preset" || failed="$failed $overlap"
done

"$python_bin" -m fedrouter.report "$output_root" || exit $?
if [ -n "$failed" ]; then
    echo "error: some runs failed at synthetic_overlap:$failed (listed in the report)" >&2
    exit 1
fi
