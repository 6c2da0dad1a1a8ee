"""The decode loop of one sequence: propose, verify in one forward, accept, roll back, commit; and the
request around it (run.py), with verification, sampling, token trees and stopping."""
