#!/bin/bash
# The hidden solution (not for the learner's editor).
cp /root/intro-made.txt /root/answer.txt
echo configured > /etc/kc-lab/settings.conf
