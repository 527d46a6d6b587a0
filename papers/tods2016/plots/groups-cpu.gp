# groups-cpu: CPU seconds of the whole study against groups (GROUP BY), per protocol (plot.py wrote this)
set terminal svg size 720,460 font 'sans,12' background '#ffffff'
set output 'groups-cpu.svg'
set logscale xy
set grid
set key left top
set xlabel 'groups (GROUP BY)'
set ylabel 'CPU seconds of the whole study'
plot '../data/groups-cpu-s_agg-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#1b9e77' title 's_agg' noenhanced, \
     '../data/groups-cpu-rnf_noise-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#d95f02' title 'rnf_noise' noenhanced, \
     '../data/groups-cpu-c_noise-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#7570b3' title 'c_noise' noenhanced, \
     '../data/groups-cpu-c_noise-predicted.dat' using 1:2 with linespoints lw 2 dt 2 pt 6 ps 0.8 lc rgb '#7570b3' title 'c_noise (predicted)' noenhanced, \
     '../data/groups-cpu-ed_hist-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#e7298a' title 'ed_hist' noenhanced, \
     '../data/groups-cpu-shuffle-measured.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#66a61e' title 'shuffle' noenhanced
