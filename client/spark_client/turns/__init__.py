"""The turn loop: selection of what to answer, persona, memory, prompt."""

# Prompt tokens per turn (persona, history, memories, chat): the history fills what the rest
# leaves (~330 tokens of persona and examples; 4-10 exchanges in the e2e run). On 2 CPU cores
# each token of context makes each read and decoded token slower; with 1,500 first audio drifted
# up as the history filled (README, "Latency"). `spark-client live --prompt-budget` sets it.
PROMPT_BUDGET_TOKENS = 900
