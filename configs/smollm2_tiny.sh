# configs/smollm2.sh with the tiny random-init model in its place: the same splits, seeds and
# budget, so the README's "With a real model" tables compare the two models and nothing else.
#   methods="clustered fedavg local" scenarios=interference seeds="111 222" \
#     sh training_scripts/run_scenarios.sh configs/smollm2_tiny.sh
. configs/smollm2.sh
model_name_or_path='tiny'
