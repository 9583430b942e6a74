test -f /root/site/index.html
