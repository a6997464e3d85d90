"""The host side: what this machine is (`metahub detect`) and logging it in (`metahub login`)."""
