#!/bin/bash
echo "step 2 started" > /var/tmp/step2-background.txt
