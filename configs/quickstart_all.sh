# The quickstart setting with every local cluster trained every round (the reference's
# standalone loop) instead of one in turn: the base preset of the schedule comparison.
#   methods="clustered router_oracle" scenarios=interference \
#     sh training_scripts/run_scenarios.sh configs/quickstart_all.sh
. configs/quickstart.sh
local_schedule="all"
