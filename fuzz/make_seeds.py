"""Seed inputs of the fuzz harnesses, from the repository's fixtures and small
files written here by hand in each format: fuzz/run.sh --seed merges them into
the committed corpora fuzz/corpus/<harness>/. Run from the repository root:

    python fuzz/make_seeds.py OUT_DIR

The run_state seeds come from the harness itself (TRAM_FUZZ_WRITE_SEEDS=DIR):
run.pt is a LibTorch C++ archive.
"""
import gzip
import json
import os
import shutil
import struct
import sys


S = sys.argv[1]
def d(n):
    p=os.path.join(S,n); os.makedirs(p,exist_ok=True); return p
F='hf/tests/fixtures'
p=d('safetensors')
for m in ['bert','gpt2','vit']:
    shutil.copy(f'{F}/models/{m}/io.safetensors', f'{p}/{m}-io.safetensors')
def pack(fmt, values):
    return struct.pack(fmt[0] + fmt[1:] * len(values), *values)
def st(tensors, meta=None):
    h={}; data=b''
    if meta: h['__metadata__']=meta
    for name,(dt,shape,raw) in tensors.items():
        h[name]={'dtype':dt,'shape':shape,'data_offsets':[len(data),len(data)+len(raw)]}; data+=raw
    t=json.dumps(h).encode(); t+=b' '*((8-len(t)%8)%8)
    return struct.pack('<Q',len(t))+t+data
open(f'{p}/dtypes.safetensors','wb').write(st({
 'a':('F32',[2,3],pack('<f',[0,1,2,3,4,5])),'b':('BOOL',[2],b'\x01\x00'),'e':('BF16',[0,3],b''),
 'i':('I64',[2],pack('<q',[1,-2])),'h':('F16',[1],pack('<e',[1.5])),'u':('U8',[1],b'\x07'),
 's':('F64',[],pack('<d',[3.0])),'q':('I16',[1],b'\x01\x00'),'r':('I8',[1],b'\x01'),'t':('I32',[1],b'\x01\x00\x00\x00')},{'format':'pt'}))
p=d('hf_config')
for m in ['bert','gpt2','vit','xlmr']:
    shutil.copy(f'{F}/models/{m}/config.json', f'{p}/{m}-config.json')
open(f'{p}/id2label.json','w').write(json.dumps({"model_type":"bert","id2label":{"0":"a","1":"b","2":"c"},"label2id":{"a":0,"b":1,"c":2},"image_size":[32,48],"layer_norm_eps":None}))
p=d('gpt2_bpe')
v=open(f'{F}/tokenizers/gpt2/vocab.json','rb').read(); m=open(f'{F}/tokenizers/gpt2/merges.txt','rb').read()
open(f'{p}/fixture','wb').write(v+b'\n\x1e\n'+m)
def bytes_to_unicode():
    bs=list(range(ord("!"),ord("~")+1))+list(range(ord("\xa1"),ord("\xac")+1))+list(range(ord("\xae"),ord("\xff")+1))
    cs=bs[:]; n=0
    for b in range(256):
        if b not in bs: bs.append(b); cs.append(256+n); n+=1
    return dict(zip(bs,[chr(c) for c in cs]))
bu=bytes_to_unicode()
vocab={bu[b]:i for i,b in enumerate(range(256))}
vocab['He']=256; vocab['<|endoftext|>']=257
open(f'{p}/tiny','wb').write(json.dumps(vocab).encode()+b'\n\x1e\n#version: 0.2\nH e\n')
p=d('wordpiece')
shutil.copy(f'{F}/tokenizers/bert/vocab.txt', f'{p}/fixture-vocab.txt')
open(f'{p}/tiny','w').write('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n##lo\nhel\n,\nworld\n!\n')
p=d('sentencepiece')
shutil.copy(f'{F}/tokenizers/xlmr/sentencepiece.bpe.model', f'{p}/fixture.model')
p=d('idx')
def idx(code, shape, fmt, values):
    return bytes([0,0,code,len(shape)])+pack('>I',shape)+pack(fmt,values)
open(f'{p}/u8-3d','wb').write(idx(0x08,[2,3,4],'>B',range(24)))
open(f'{p}/i8-1d','wb').write(idx(0x09,[3],'>b',[-1,2,3]))
open(f'{p}/i16-2d','wb').write(idx(0x0B,[2,2],'>h',[1,-2,3,4]))
open(f'{p}/i32-1d','wb').write(idx(0x0C,[3],'>i',[1,2,70000]))
open(f'{p}/f32-1d','wb').write(idx(0x0D,[2],'>f',[1.5,-2.0]))
open(f'{p}/f64-1d','wb').write(idx(0x0E,[2],'>d',[1.5,-2.0]))
open(f'{p}/u8-3d.gz','wb').write(gzip.compress(idx(0x08,[2,3,4],'>B',range(24))))
p=d('cifar')
rec=lambda c,f: bytes([c,f])+bytes((i*7+f)%256 for i in range(3072))
open(f'{p}/two-records','wb').write(rec(3,42)+rec(19,99))
p=d('nli')
open(f'{p}/multinli.tsv','wb').write(b'\x00'+b"gold_label\tsentence1_parse\tsentence1\tsentence2\tpairID\r\nneutral\t(x)\tA man sleeps.\tA man dreams.\t1\r\n-\t(x)\tNo consensus.\tNone.\t2\r\n\r\ncontradiction\t(x)\tIt is day.\tIt is night.\t3\r\n")
open(f'{p}/xnli.tsv','wb').write(b'\x02'+"language\tgold_label\tsentence1\tsentence2\nen\tentailment\tThe dog runs.\tAn animal moves.\nfr\tneutral\tLe chien court.\tIl fait beau.\n".encode())
open(f'{p}/translated.tsv','wb').write(b'\x04'+b"premise\thypo\tlabel\nA\tB\tcontradictory\n")
open(f'{p}/hub.jsonl','wb').write(b'\x01'+b'{"premise": "A", "hypothesis": "B", "label": 0}\n{"premise": "C", "hypothesis": "D", "label": -1}\n{"sentence1": "E", "sentence2": "F", "gold_label": "neutral", "language": "en"}\n')
open(f'{p}/xnli.jsonl','wb').write(b'\x03'+b'{"premise": "A", "hypothesis": "B", "label": "entailment", "language": "en"}\n{"premise": "C", "hypothesis": "D", "label": 2, "language": "de"}\n')
p=d('text_labels')
open(f'{p}/ids','wb').write(b'good film\t1\nbad film\t0\r\n\nfine\t2\n\n\x1e\neval text\t1\n')
open(f'{p}/names','wb').write(b'good film\tpositive\nbad film\tnegative\n\x1e\nmeh\tpositive\n')
p=d('optimizer_checkpoint')
methods=["sam", "asam", "fsam", "tram-prev", "tram-pre", "tram-noise", "tram-fisher","trpo", "r3f", "mesa", "asam+trpo", "tram-pre+mesa"]
# Four of the twelve (12 KB each): a SAM-family method, the TRAM method with
# a parameter copy, the Fisher one and a regularized one; the first byte
# picks the method to load into, so the fuzzer also loads them into others.
for mname in ['sam', 'tram-prev', 'tram-fisher', 'tram-pre+mesa']:
    i = methods.index(mname)
    open(f'{p}/{mname}','wb').write(bytes([i])+open(f'tests/checkpoints/v2/{mname}.pt','rb').read())
d('run_state')
