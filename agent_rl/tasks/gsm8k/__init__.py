"""GSM8K: the converter of the published files (`convert`); scored by the arithmetic task's reward, with the
`calc_gsm8k_reward` tool (`tools/gsm8k_reward.py`)."""
