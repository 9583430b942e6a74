touch /tmp/intro-ran
