# participants-bytes: bytes through the service against participants, per protocol (plot.py wrote this)
set terminal svg size 720,460 font 'sans,12' background '#ffffff'
set output 'participants-bytes.svg'
set logscale xy
set grid
set key left top
set xlabel 'participants'
set ylabel 'bytes through the service'
set title 'ed_hist includes its histogram study' noenhanced
plot '../data/participants-bytes-s_agg-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#1b9e77' title 's_agg' noenhanced, \
     '../data/participants-bytes-rnf_noise-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#d95f02' title 'rnf_noise' noenhanced, \
     '../data/participants-bytes-rnf_noise-predicted.dat' using 1:2 with linespoints lw 2 dt 2 pt 6 ps 0.8 lc rgb '#d95f02' title 'rnf_noise (predicted)' noenhanced, \
     '../data/participants-bytes-c_noise-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#7570b3' title 'c_noise' noenhanced, \
     '../data/participants-bytes-c_noise-predicted.dat' using 1:2 with linespoints lw 2 dt 2 pt 6 ps 0.8 lc rgb '#7570b3' title 'c_noise (predicted)' noenhanced, \
     '../data/participants-bytes-ed_hist-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#e7298a' title 'ed_hist' noenhanced, \
     '../data/participants-bytes-shuffle-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#66a61e' title 'shuffle' noenhanced
