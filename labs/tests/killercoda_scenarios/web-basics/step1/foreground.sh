cd /root
