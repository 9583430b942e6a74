/ks/wait-background.sh
echo "the intro's foreground ran in $(pwd)" > /tmp/intro-foreground.txt
