#!/bin/sh
# FedRouter on Flower: one simulation per seed, one log per seed.
#
#   sh training_scripts/run_flower_simulation_router.sh [PRESET]
#
# Edit the variables below, or pass a preset (a small shell file that overrides some of
# them, e.g. configs/quickstart.sh). Each seed writes ${output_dir}/${sim_alias}_seed${seed}_log.txt
# and a run directory ${output_dir}/${sim_alias}_${fed_alg}_seed${seed}/ (see README); a later or
# concurrent run of the same name gets its own pair, suffixed _2, _3...
# The defaults are the experiment of the paper's own code (README, "Fidelity to the
# reference implementation"); each is also its Config field's default (tests/test_defaults.py).

# Training configuration
max_steps=10
num_train_epochs=1
num_rounds=25
eval_round="3,10,25,50,75,100"        # rounds after which to evaluate (beyond num_rounds: dropped)
batch_size=16
batch_size_eval=128
gradient_accumulation_steps=1
seq_length=1024
num_clients=8
sample_clients=8
lora_r=8
lora_alpha=16                         # twice lora_r
lora_target_modules='peft-default'    # PEFT's default for the model (q_proj,v_proj on Llama) | all-linear | a,b,c
lr=5e-4                               # peak of the cosine over rounds (round r of R: cos(pi r/R)), down to 1e-5

# Dataset configuration
dataset_name='multitask'              # multitask (Hub) | multitask_synthetic (offline)
dataset_sample=400000                # cap on the pooled rows; above the pools' size, so no cap
local_data_dir=''                     # folder with <task>/<files> in the Hub's columns, if offline
instruction_format='raw'              # raw (the task's input alone) | phrased (a task sentence first)
synthetic_overlap=0                   # multitask_synthetic's difficulty in [0, 1]: 0 as always, 1 hardest

# Model configuration
model_name_or_path='meta-llama/Llama-3.2-1B'   # or a local folder, a .gguf file, 'smollm2-135m', or 'tiny'
seeds="111 222 333 444 555"

# Output configuration
output_dir="output_multitask/experiments_1b"
sim_alias='router_single'
scenario='custom'                     # label the report groups runs by (set by scenario presets)

# Federated learning configuration
fed_alg="clustered"                   # clustered (= FedRouter) | router_oracle
sim_round=105                         # round of client clustering for cfl (ignored by FedRouter)
n_clusters=1                          # local clusters per client
global_n_clusters=4                   # global task clusters
split_strategy="multitask_clusters"   # iid | multitask_iid | multitask_clusters | multitask_multi_domain
train_split=0.8                       # global train/test split of the pooled data (seed 0)
evaluation_mode="local"               # local | global | data_local_eval_global | data_global_eval_local
local_schedule="round_robin"          # round_robin: local cluster round % n_clusters | all: every one
seeding="reference"                   # reference: the seed drives the data split only | run: everything

gpu='0,1'                             # exported as CUDA_VISIBLE_DEVICES

# Advanced configuration
client_resources_cpus=1
client_resources_gpus=1               # 0 on a machine without CUDA
template="alpaca"
max_new_tokens=512                    # greedy generation length at evaluation
generation_prompt="marker"            # marker: prompt ends at '### Response:' | exact: with its space
max_data_per_client=600
max_eval_size=300
resume=False                          # True: continue each seed's run from its last checkpoint
save_every=1                          # checkpoint the server state every this many rounds
extra_args=""                         # any further flags, e.g. "--lora_dropout 0.1"

python_bin="${PYTHON:-python}"
# ---- end of the variables: fedrouter/launcher.py sources only the lines above ----

if [ $# -gt 0 ]; then
    if [ ! -f "$1" ]; then
        echo "error: preset '$1' not found" >&2
        exit 2
    fi
    echo "Using preset $1"
    case "$1" in
        */*) . "$1" ;;
        *) . "./$1" ;;  # `.` looks a bare name up in PATH, not in the current folder
    esac
fi

# shellcheck disable=SC2086  # unquoted on purpose: a blank list is as empty as ""
[ -n "$(echo $seeds)" ] || { echo "error: seeds is empty; set seeds=\"111 222\" (one run per seed)" >&2; exit 2; }
mkdir -p "$output_dir" || { echo "error: cannot create output_dir '$output_dir'" >&2; exit 2; }
export CUDA_VISIBLE_DEVICES="$gpu"
export PYTHONUNBUFFERED=1

echo "Starting Flower simulation (fed_alg=$fed_alg, seeds: $seeds)"
for seed in $seeds; do
    log="$output_dir/${sim_alias}_seed${seed}_log.txt"
    echo "===== seed $seed ====="
    set -- \
        --learning_rate "$lr" \
        --model_name_or_path "$model_name_or_path" \
        --dataset_name "$dataset_name" \
        --dataset_sample "$dataset_sample" \
        --local_data_dir "$local_data_dir" \
        --instruction_format "$instruction_format" \
        --synthetic_overlap "$synthetic_overlap" \
        --fed_alg "$fed_alg" \
        --num_clients "$num_clients" \
        --sample_clients "$sample_clients" \
        --max_steps "$max_steps" \
        --num_train_epochs "$num_train_epochs" \
        --num_rounds "$num_rounds" \
        --batch_size "$batch_size" \
        --gradient_accumulation_steps "$gradient_accumulation_steps" \
        --seq_length "$seq_length" \
        --peft_lora_r "$lora_r" \
        --peft_lora_alpha "$lora_alpha" \
        --lora_target_modules "$lora_target_modules" \
        --output_dir "$output_dir" \
        --template "$template" \
        --sim_round "$sim_round" \
        --n_clusters "$n_clusters" \
        --global_n_clusters "$global_n_clusters" \
        --split_strategy "$split_strategy" \
        --train_split "$train_split" \
        --sim_alias "$sim_alias" \
        --scenario "$scenario" \
        --evaluation_rounds "$eval_round" \
        --eval_batch_size "$batch_size_eval" \
        --evaluation_mode "$evaluation_mode" \
        --local_schedule "$local_schedule" \
        --seeding "$seeding" \
        --client_resources_cpus "$client_resources_cpus" \
        --client_resources_gpus "$client_resources_gpus" \
        --max_new_tokens "$max_new_tokens" \
        --generation_prompt "$generation_prompt" \
        --max_data_per_client "$max_data_per_client" \
        --max_eval_size "$max_eval_size" \
        --seed "$seed" \
        --resume "$resume" \
        --save_every "$save_every"
    # The run claims its log: $log, or ${log%_log.txt}_2_log.txt... beside a run directory of
    # the same suffix, so that no other run's log is ever written over. It prints both paths,
    # then writes everything else there; Ctrl-C stops it within seconds (resume=True goes on).
    # shellcheck disable=SC2086
    "$python_bin" -m fedrouter.simulation "$@" $extra_args --log_file "$log"
    status=$?
    if [ $status -ne 0 ]; then
        echo "error: seed $seed stopped (exit $status); no further seed runs" >&2
        exit $status
    fi
done
