#!/usr/bin/env python3
# A/B of two or more `npm run bench:compare` raw JSON files (bench/results/<date>-<host>.json copied
# aside after each run as /tmp/k/bc_<tag>.json): ferroconv old/new speed per conv group and train step.
import json,math,sys
def load(t): return json.load(open(f'/tmp/k/bc_{t}.json'))
def times(d):
    out={}
    for r in d['conv']['rows']:
        for p,v in r['ferroconv']['auto'].items(): out[('rows','auto',p,r['shape']['key'])]=v['min']
    for r in d['conv']['algorithms']:
        for a,ps in r['ferroconv'].items():
            for p,v in ps.items(): out[('alg',a,p,r['key'])]=v['min']
    for r in d['train']:
        out[('train',r['model'],'step','')]=r['byFw']['ferroconv']['step']['min']
    return out
def cmp(old,new,title):
    o,n=times(load(old)),times(load(new))
    groups={}
    for k in o:
        if k in n and o[k]>0 and n[k]>0: groups.setdefault(k[:3],[]).append(o[k]/n[k])
    print(f'{title}: speed {new}/{old}')
    for g,v in sorted(groups.items()):
        gm=math.exp(sum(map(math.log,v))/len(v))
        print(f'  {g[0]:5} {g[1]:9} {g[2]:9} n={len(v):3} geomean {gm:.3f} worst {min(v):.2f} best {max(v):.2f}')
for a,b in [('old1','new2'),('old2','new2'),('old1','new1'),('old1','old2'),('new1','new2')]: cmp(a,b,f'{a} vs {b}')
