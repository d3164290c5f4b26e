"""Private broker processes: one per run or test, on a free port with its own data dir.

Never the system's broker: these can be killed, paused and restarted freely.
"""
