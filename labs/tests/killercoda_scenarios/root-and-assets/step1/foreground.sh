echo "step 1 foreground ran" > /tmp/step1-foreground.txt
