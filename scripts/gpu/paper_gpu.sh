# The project's defaults (the reference's: batch 16, 10 steps, seq 1024, r8/a16 on q_proj/v_proj,
# lr 5e-4, eval batch 128, 512 new tokens, 600 rows per client), on the offline benchmark,
# 3 rounds, 4 clients sharing one GPU, one evaluation after round 3 on 64 rows per client
# (to keep a device call short). The model comes from `bench --geometry llama-3.2-1b`.
dataset_name='multitask_synthetic'
seeds="111"
sim_alias='gpu'
num_rounds=3
eval_round="3"
max_eval_size=64
gpu='0'
client_resources_cpus=2
client_resources_gpus=0.25
