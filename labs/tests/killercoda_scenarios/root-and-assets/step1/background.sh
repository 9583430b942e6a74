#!/bin/bash
echo "step 1 background ran as $(id -un)" > /var/tmp/step1-background.txt
